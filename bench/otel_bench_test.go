package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	kafkabus "github.com/eventsource-go/eventsource/bus/kafka"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/otel"
)

// BenchmarkOtel measures what the otel module costs, each case without
// ("plain") and with instrumentation, side by side in one run:
//
//   - SyncDispatch: the in-process bus, one typed handler (the
//     BenchmarkSyncDispatch/ours/handlers=1 case). plain is the
//     uninstrumented bus (0 allocs/op); the others wrap it and add the
//     middleware.
//   - Redis, RabbitMQ, Kafka: the EndToEnd/ours case of each broker's
//     benchmark (publish, deliver to one in-order sink, settled).
//
// The instrumented variants run the SDK as an application does, spans
// batched to an exporter that discards them and metrics aggregated for a
// reader that is not collected during the run:
//
//   - sampled: every span recorded;
//   - ratio: a parent-based sampler recording 1% of the traces, what a
//     busy service typically runs;
//   - unsampled: a sampler that records no span (the instrumentation's
//     cost when the trace is dropped);
//   - metrics: metrics only, on a no-op tracer provider;
//   - plain+tp: no instrumentation, but every event carries a W3C
//     traceparent, as an instrumented one does on the wire: what carrying
//     the trace context costs the codec, apart from the SDK's work.
//
// A broker case runs when its variable is set, as in the broker benchmarks.
func BenchmarkOtel(b *testing.B) {
	modes := []struct {
		name string
		tel  func(b *testing.B) *otel.Telemetry
	}{
		{"plain", func(*testing.B) *otel.Telemetry { return nil }},
		{"sampled", func(b *testing.B) *otel.Telemetry { return benchTelemetry(b, sdktrace.AlwaysSample()) }},
		{"ratio", func(b *testing.B) *otel.Telemetry {
			return benchTelemetry(b, sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01)))
		}},
		{"unsampled", func(b *testing.B) *otel.Telemetry { return benchTelemetry(b, sdktrace.NeverSample()) }},
		{"metrics", func(b *testing.B) *otel.Telemetry { return benchTelemetry(b, nil) }},
		{"plain+tp", func(*testing.B) *otel.Telemetry { return nil }},
	}
	for _, m := range modes {
		if m.name == "plain+tp" {
			continue // the in-process bus does not encode
		}
		b.Run("SyncDispatch/"+m.name, func(b *testing.B) {
			if tel := m.tel(b); tel != nil {
				benchOtelSync(b, tel)
			} else {
				benchSyncOurs(b, 1)
			}
		})
	}
	for _, c := range []struct {
		name, env string
		run       func(b *testing.B, addr string, tel *otel.Telemetry, decorate func(bus.Bus) bus.Bus)
	}{
		{"Redis", "EVENTSOURCE_REDIS_URL", benchOtelRedis},
		{"RabbitMQ", "EVENTSOURCE_AMQP_URL", benchOtelRabbit},
		{"Kafka", "EVENTSOURCE_KAFKA_BROKERS", benchOtelKafka},
	} {
		for _, m := range modes {
			b.Run(c.name+"/EndToEnd/"+m.name, func(b *testing.B) {
				url := testenv.URL(b, c.env, "set "+c.env+" to run the "+c.name+" cases")
				if m.name == "plain+tp" {
					c.run(b, url, nil, stampTraceParent)
					return
				}
				c.run(b, url, m.tel(b), nil)
			})
		}
	}
}

// benchTelemetry returns a Telemetry on SDK providers that are shut down
// when b ends: spans go through sampler (none at all when it is nil: a
// no-op tracer provider, for metrics only).
func benchTelemetry(b *testing.B, sampler sdktrace.Sampler) *otel.Telemetry {
	var tp trace.TracerProvider = noop.NewTracerProvider()
	if sampler != nil {
		tp = benchTracerProvider(b, sampler)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	tel, err := otel.New(otel.WithTracerProvider(tp), otel.WithMeterProvider(mp))
	if err != nil {
		b.Fatal(err)
	}
	return tel
}

// benchTracerProvider returns an SDK tracer provider, shut down when b
// ends, that batches the spans sampler keeps to an exporter that discards
// them.
func benchTracerProvider(b *testing.B, sampler sdktrace.Sampler) *sdktrace.TracerProvider {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sampler))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

// stampTraceParent returns b publishing every event with a traceparent.
func stampTraceParent(b bus.Bus) bus.Bus { return traceParentBus{b} }

type traceParentBus struct{ bus.Bus }

// Publish sets the events' traceparent in place: the harness builds each
// batch afresh.
func (b traceParentBus) Publish(ctx context.Context, events ...eventsource.Envelope) error {
	for i := range events {
		events[i].Metadata.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	}
	return b.Bus.Publish(ctx, events...)
}

// instrument returns the bus middleware of tel (none when tel is nil) and
// the decoration of the bus (decorate, when not nil, after tel's).
func instrument(tel *otel.Telemetry, system string, decorate func(bus.Bus) bus.Bus) (mws []bus.Middleware, wrap func(bus.Bus) bus.Bus) {
	if decorate == nil {
		decorate = func(b bus.Bus) bus.Bus { return b }
	}
	if tel == nil {
		return nil, decorate
	}
	bt := tel.Bus(system, "bench")
	return []bus.Middleware{bt.Middleware()}, func(b bus.Bus) bus.Bus { return decorate(bt.Wrap(b)) }
}

func benchOtelSync(b *testing.B, tel *otel.Telemetry) {
	mws, wrap := instrument(tel, otel.SystemInProcess, nil)
	bs := wrap(bus.NewInProcess(bus.WithLogger(quietLogger()), bus.WithHandlerMiddleware(mws...)))
	var sum int64
	if _, err := bus.On(bs, func(_ context.Context, e OrderPlaced, _ eventsource.Envelope) error {
		sum += e.Amount
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	env := orderEnvelope("order-1")
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		if err := bs.Publish(benchCtx, env); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
	if sum != int64(b.N)*env.Event.(OrderPlaced).Amount {
		b.Fatalf("handled %d events of %d", sum/env.Event.(OrderPlaced).Amount, b.N)
	}
	closeAtEnd(b, bs)
}

func benchOtelRedis(b *testing.B, url string, tel *otel.Telemetry, decorate func(bus.Bus) bus.Bus) {
	prefix, _ := redisPrefix(b, url)
	mws, wrap := instrument(tel, otel.SystemRedis, decorate)
	r := eventsource.NewRegistry()
	eventsource.MustRegister[OrderPlaced](r)
	rb, err := redisbus.New(context.Background(), redisbus.Config{
		URL: url, Registry: r, StreamPrefix: prefix, Group: "bench", Logger: quietLogger(), Middleware: mws,
	})
	if err != nil {
		b.Fatal(err)
	}
	bb := wrap(rb)
	closeAtEnd(b, bb)
	benchOursEndToEnd(b, redisLoad, bb, false, redisHandled(rb))
}

func benchOtelRabbit(b *testing.B, url string, tel *otel.Telemetry, decorate func(bus.Bus) bus.Bus) {
	exchange, queues, _ := rabbitNames(b, url)
	mws, wrap := instrument(tel, otel.SystemRabbitMQ, decorate)
	cfg := rabbitConfig(url, exchange)
	cfg.Middleware = mws
	rb := openRabbitBus(b, cfg, queues)
	benchOursEndToEnd(b, rabbitLoad, wrap(rb), false, rabbitHandled(rb))
}

func benchOtelKafka(b *testing.B, addr string, tel *otel.Telemetry, decorate func(bus.Bus) bus.Bus) {
	brokers := strings.Split(addr, ",")
	topic := kafkaTopic(b, brokers)
	mws, wrap := instrument(tel, otel.SystemKafka, decorate)
	r := eventsource.NewRegistry()
	eventsource.MustRegister[OrderPlaced](r)
	kb, err := kafkabus.New(benchCtx, kafkabus.Config{
		Brokers: brokers, Registry: r, Topic: topic, Group: "bench", CreateTopics: true, Partitions: kafkaPartitions,
		CommitInterval: kafkaCommitInterval, Logger: quietLogger(), Middleware: mws,
	})
	if err != nil {
		b.Fatal(err)
	}
	bb := wrap(kb)
	closeAtEnd(b, bb)
	benchOursEndToEnd(b, kafkaLoad, bb, true, kafkaCommitted(brokers, topic))
}

// BenchmarkOtelSDK measures the bare OpenTelemetry SDK calls the
// instrumentation makes per event, in the same run as BenchmarkOtel, so
// that its figures can be read against their floor: a span started and
// ended (sampled into a batcher, or dropped by the sampler), a histogram
// record and a counter add with a prepared attribute set, time.Now.
func BenchmarkOtelSDK(b *testing.B) {
	attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("messaging.system", "bench"),
		attribute.String("messaging.destination.name", "OrderPlaced")))
	for _, c := range []struct {
		name    string
		sampler sdktrace.Sampler
	}{{"sampled", sdktrace.AlwaysSample()}, {"unsampled", sdktrace.NeverSample()}} {
		b.Run("SpanStartEnd/"+c.name, func(b *testing.B) {
			tp := benchTracerProvider(b, c.sampler)
			tr := tp.Tracer("bench")
			kind := trace.WithSpanKind(trace.SpanKindConsumer)
			b.ReportAllocs()
			for b.Loop() {
				_, span := tr.Start(benchCtx, "process OrderPlaced", kind)
				span.End()
			}
		})
	}
	b.Run("HistogramRecord", func(b *testing.B) {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
		h, err := mp.Meter("bench").Float64Histogram("h")
		if err != nil {
			b.Fatal(err)
		}
		opts := []metric.RecordOption{attrs}
		b.ReportAllocs()
		for b.Loop() {
			h.Record(benchCtx, 0.001, opts...)
		}
	})
	b.Run("CounterAdd", func(b *testing.B) {
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
		c, err := mp.Meter("bench").Int64Counter("c")
		if err != nil {
			b.Fatal(err)
		}
		opts := []metric.AddOption{attrs}
		b.ReportAllocs()
		for b.Loop() {
			c.Add(benchCtx, 1, opts...)
		}
	})
	b.Run("TimeNow", func(b *testing.B) {
		var t time.Time
		for b.Loop() {
			t = time.Now()
		}
		_ = t
	})
}
