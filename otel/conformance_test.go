package otel_test

import (
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/otel"
)

// The conformance runs check that instrumentation, the middleware and
// Wrap, changes nothing of what the suite holds a bus to, except what
// Wrap documents: each event travels under its producer span's trace
// context, in the event's trace (bustest.Features.TraceContextReplaced).
// Every span is recorded and every measurement kept.

func sdkTelemetry(t *testing.T) *otel.Telemetry {
	tel, err := otel.New(
		otel.WithTracerProvider(sdktrace.NewTracerProvider()),
		otel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))))
	if err != nil {
		t.Fatal(err)
	}
	return tel
}

// suiteConfig is the broker bus the suite asks for.
func suiteConfig(cfg bustest.Config) brokerConfig {
	c := brokerConfig{namespace: cfg.Namespace, group: cfg.Group, registry: cfg.Registry, retry: fastRetry}
	if cfg.MaxRetries > 0 {
		c.retry.MaxRetries = cfg.MaxRetries
	}
	return c
}

func TestInProcessConformanceInstrumented(t *testing.T) {
	tel := sdkTelemetry(t)
	bustest.Run(t, bustest.Features{Synchronous: true, OrderingPerAggregate: true, TraceContextReplaced: true},
		func(t *testing.T, cfg bustest.Config) bus.Bus {
			bt := tel.Bus(otel.SystemInProcess, "")
			return bt.Wrap(bus.NewInProcess(bus.WithLogger(quiet()), bus.WithHandlerMiddleware(bt.Middleware())))
		})
}

func TestRedisConformanceInstrumented(t *testing.T) {
	testenv.URL(t, "EVENTSOURCE_REDIS_URL", "start Redis and set EVENTSOURCE_REDIS_URL=redis://127.0.0.1:6379/0")
	tel := sdkTelemetry(t)
	bustest.Run(t, bustest.Features{ConsumerGroups: true, OrderingPerAggregate: true, Persistence: true, TraceContextReplaced: true},
		func(t *testing.T, cfg bustest.Config) bus.Bus { return openRedis(t, tel, suiteConfig(cfg)) })
}

func TestRabbitMQConformanceInstrumented(t *testing.T) {
	testenv.URL(t, "EVENTSOURCE_AMQP_URL", "start RabbitMQ and set EVENTSOURCE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/")
	tel := sdkTelemetry(t)
	bustest.Run(t, bustest.Features{ConsumerGroups: true, OrderingPerAggregate: true, MaxEventBytes: 1 << 20, TraceContextReplaced: true},
		func(t *testing.T, cfg bustest.Config) bus.Bus { return openRabbitMQ(t, tel, suiteConfig(cfg)) })
}

func TestKafkaConformanceInstrumented(t *testing.T) {
	testenv.URL(t, "EVENTSOURCE_KAFKA_BROKERS", "start a Kafka-protocol broker and set EVENTSOURCE_KAFKA_BROKERS=127.0.0.1:9092")
	tel := sdkTelemetry(t)
	bustest.Run(t, bustest.Features{ConsumerGroups: true, OrderingPerAggregate: true, Persistence: true,
		MaxEventBytes: 1 << 20, TraceContextReplaced: true, Timeout: 30 * time.Second},
		func(t *testing.T, cfg bustest.Config) bus.Bus { return openKafka(t, tel, suiteConfig(cfg)) })
}
