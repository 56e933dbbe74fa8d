package otel_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/bus/kafka"
	"github.com/eventsource-go/eventsource/bus/rabbitmq"
	"github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/otel"
)

// The events of the tests: each type has one handler with one behaviour.
type (
	Good      struct{ N int }
	Flaky     struct{ N int } // fails its first attempt
	Failing   struct{ N int } // always fails: dead-lettered after the retries
	Poisonous struct{ N int } // fails permanently: dead-lettered at once
)

func (Good) EventType() string      { return "OtelGood" }
func (Flaky) EventType() string     { return "OtelFlaky" }
func (Failing) EventType() string   { return "OtelFailing" }
func (Poisonous) EventType() string { return "OtelPoisonous" }

func registry() *eventsource.Registry {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[Good](r)
	eventsource.MustRegister[Flaky](r)
	eventsource.MustRegister[Failing](r)
	eventsource.MustRegister[Poisonous](r)
	return r
}

// Account is the aggregate the trace tests save.
type Account struct{ aggregate.Base }

func newAccount() *Account                   { return &Account{} }
func (*Account) AggregateType() string       { return "OtelAccount" }
func (*Account) Apply(eventsource.Event)     {}
func (a *Account) Raise(e eventsource.Event) { aggregate.Raise(a, e) }

// fastRetry keeps the retrying tests short.
var fastRetry = consumer.RetryPolicy{MaxRetries: 3, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Multiplier: 2}

// busCase opens one kind of bus, instrumented by bt, for a test.
type busCase struct {
	system string
	broker bool // retries and dead letters
	open   func(t *testing.T, tel *otel.Telemetry) bus.Bus
}

var seq atomic.Int64

func unique(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), seq.Add(1))
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func busCases() []busCase {
	return []busCase{
		{system: otel.SystemInProcess, open: func(t *testing.T, tel *otel.Telemetry) bus.Bus {
			bt := tel.Bus(otel.SystemInProcess, "")
			b := bt.Wrap(bus.NewInProcess(bus.WithLogger(quiet()), bus.WithHandlerMiddleware(bt.Middleware())))
			t.Cleanup(func() { closeBus(t, b) })
			return b
		}},
		{system: otel.SystemRedis, broker: true, open: func(t *testing.T, tel *otel.Telemetry) bus.Bus {
			b := openRedis(t, tel, brokerConfig{namespace: unique("otel"), group: "g", registry: registry(), retry: fastRetry})
			t.Cleanup(func() { closeBus(t, b) })
			return b
		}},
		{system: otel.SystemRabbitMQ, broker: true, open: func(t *testing.T, tel *otel.Telemetry) bus.Bus {
			b := openRabbitMQ(t, tel, brokerConfig{namespace: unique("otel"), group: "g", registry: registry(), retry: fastRetry})
			t.Cleanup(func() { closeBus(t, b) })
			return b
		}},
		{system: otel.SystemKafka, broker: true, open: func(t *testing.T, tel *otel.Telemetry) bus.Bus {
			b := openKafka(t, tel, brokerConfig{namespace: unique("otel"), group: "g", registry: registry(), retry: fastRetry})
			t.Cleanup(func() { closeBus(t, b) })
			return b
		}},
	}
}

// brokerConfig is what the tests vary between broker buses.
type brokerConfig struct {
	namespace, group string // stream prefix, exchange or topic; consumer group
	registry         *eventsource.Registry
	retry            consumer.RetryPolicy
}

// openRedis returns a Redis bus instrumented by tel, wrapped; its keys are
// deleted when the test ends.
func openRedis(t *testing.T, tel *otel.Telemetry, c brokerConfig) bus.Bus {
	t.Helper()
	url := testenv.URL(t, "EVENTSOURCE_REDIS_URL", "start Redis and set EVENTSOURCE_REDIS_URL=redis://127.0.0.1:6379/0")
	cleanupRedis(t, url, c.namespace)
	bt := tel.Bus(otel.SystemRedis, c.group)
	rb, err := redis.New(context.Background(), redis.Config{URL: url, StreamPrefix: c.namespace, Group: c.group,
		Registry: c.registry, Retry: c.retry, Block: 100 * time.Millisecond, Logger: quiet(),
		Middleware: []bus.Middleware{bt.Middleware()}})
	if err != nil {
		t.Fatal(err)
	}
	return bt.Wrap(rb)
}

// openRabbitMQ returns a RabbitMQ bus instrumented by tel, wrapped; its
// group's queues and the exchange are deleted when the test ends.
func openRabbitMQ(t *testing.T, tel *otel.Telemetry, c brokerConfig) bus.Bus {
	t.Helper()
	url := testenv.URL(t, "EVENTSOURCE_AMQP_URL", "start RabbitMQ and set EVENTSOURCE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/")
	bt := tel.Bus(otel.SystemRabbitMQ, c.group)
	cfg := rabbitmq.Config{URL: url, Exchange: c.namespace, Group: c.group, Registry: c.registry,
		Retry: c.retry, MaxMessageSize: 1 << 20, Logger: quiet(), Middleware: []bus.Middleware{bt.Middleware()}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rabbitmq.DeleteGroup(ctx, cfg, rabbitmq.IncludeExchange()); err != nil {
			t.Errorf("deleting the RabbitMQ topology: %v", err)
		}
	})
	rb, err := rabbitmq.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return bt.Wrap(rb)
}

// openKafka returns a Kafka bus instrumented by tel, wrapped; its topics
// are deleted when the test ends.
func openKafka(t *testing.T, tel *otel.Telemetry, c brokerConfig) bus.Bus {
	t.Helper()
	brokers := testenv.URL(t, "EVENTSOURCE_KAFKA_BROKERS", "start a Kafka-protocol broker and set EVENTSOURCE_KAFKA_BROKERS=127.0.0.1:9092")
	bt := tel.Bus(otel.SystemKafka, c.group)
	cfg := kafka.Config{Brokers: strings.Split(brokers, ","), Topic: c.namespace, Group: c.group,
		Registry: c.registry, Retry: c.retry, Logger: quiet(), CreateTopics: true,
		SessionTimeout: 3 * time.Second, HeartbeatInterval: 100 * time.Millisecond,
		RebalanceTimeout: 10 * time.Second, CommitInterval: 50 * time.Millisecond,
		Middleware: []bus.Middleware{bt.Middleware()}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := kafka.DeleteTopics(ctx, cfg, cfg.WithDefaults().Topics()...); err != nil {
			t.Errorf("deleting the Kafka topics: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kb, err := kafka.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return bt.Wrap(kb)
}

// recording returns a Telemetry whose spans rec records (when traces)
// and whose measurements reader collects (when metrics); the other
// signal goes to a no-op provider.
func recording(t *testing.T, traces, metrics bool, extra ...otel.Option) (tel *otel.Telemetry, tp *sdktrace.TracerProvider, rec *tracetest.SpanRecorder, reader *sdkmetric.ManualReader) {
	t.Helper()
	opts := []otel.Option{otel.WithTracerProvider(tracenoop.NewTracerProvider()), otel.WithMeterProvider(metricnoop.NewMeterProvider())}
	if traces {
		rec = tracetest.NewSpanRecorder()
		tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		opts = append(opts, otel.WithTracerProvider(tp))
	}
	if metrics {
		reader = sdkmetric.NewManualReader()
		opts = append(opts, otel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	}
	tel, err := otel.New(append(opts, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return tel, tp, rec, reader
}

func closeBus(t *testing.T, b bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// cleanupRedis deletes the keys of prefix when the test ends, after the
// bus is closed (cleanups run last-registered first).
func cleanupRedis(t *testing.T, url, prefix string) {
	t.Helper()
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c := goredis.NewClient(opts)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := redis.DeleteKeys(ctx, c, prefix); err != nil {
			t.Errorf("deleting keys of %s: %v", prefix, err)
		}
	})
}

// waitUntil polls cond until it holds, failing the test after a deadline.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
