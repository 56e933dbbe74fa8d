package otel

import (
	"errors"
	"fmt"
	"time"

	otelapi "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/eventsource-go/eventsource/otel"

// Values of messaging.system for the framework's buses. The in-process bus
// is no messaging system OpenTelemetry names, hence a value of its own.
const (
	SystemInProcess = "eventsource_inprocess"
	SystemRedis     = "redis"
	SystemRabbitMQ  = "rabbitmq"
	SystemKafka     = "kafka"
	// SystemProjection labels the runs of an instrumented projection
	// (Telemetry.Projection), which reads the store, not a broker.
	SystemProjection = "eventsource_projection"
)

// Attribute keys of the framework's own facts.
const (
	HandlerKey       = attribute.Key("eventsource.handler.name")
	OutcomeKey       = attribute.Key("eventsource.outcome") // ok, error, panic, permanent
	AggregateTypeKey = attribute.Key("eventsource.aggregate.type")
	AggregateIDKey   = attribute.Key("eventsource.aggregate.id") // spans only
	StreamIDKey      = attribute.Key("eventsource.stream.id")    // spans only
	EventCountKey    = attribute.Key("eventsource.event.count")
	FollowerKindKey  = attribute.Key("eventsource.follower.kind") // projection, relay
	FollowerNameKey  = attribute.Key("eventsource.follower.name")
	LagKindKey       = attribute.Key("eventsource.lag.kind")
)

// Outcomes of a handler run (OutcomeKey).
const (
	OutcomeOK        = "ok"
	OutcomeError     = "error"
	OutcomePanic     = "panic"
	OutcomePermanent = "permanent"
)

// Telemetry holds the tracer, the meter and the instruments one process
// shares. It is safe for concurrent use.
type Telemetry struct {
	tracer trace.Tracer
	// tracing is false on a no-op tracer provider (metrics only): the
	// per-event span work, trace context included, is skipped.
	tracing bool
	meter   metric.Meter

	publishDuration metric.Float64Histogram
	processDuration metric.Float64Histogram
	latency         metric.Float64Histogram

	stats      statsInstruments
	lagTimeout time.Duration // see WithLagTimeout
}

// Option configures a Telemetry.
type Option func(*config)

type config struct {
	tp         trace.TracerProvider
	mp         metric.MeterProvider
	lagTimeout time.Duration
}

// WithTracerProvider sets the tracer provider (default: OpenTelemetry's
// global one).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets the meter provider (default: OpenTelemetry's
// global one).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// DefaultLagTimeout bounds a broker lag read when WithLagTimeout is not
// given.
const DefaultLagTimeout = 5 * time.Second

// WithLagTimeout bounds each read of a broker's lag at collection (0:
// DefaultLagTimeout). A collection's ctx may have no deadline (the
// Prometheus exporter's has none), and a collection holds every other
// collection of the provider, and a wrapped bus's Close, until it returns.
func WithLagTimeout(d time.Duration) Option {
	return func(c *config) { c.lagTimeout = d }
}

// durationBuckets suit handler and broker round trips, from 100µs to 10s.
var durationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// New returns a Telemetry that creates its instruments on the providers.
func New(opts ...Option) (*Telemetry, error) {
	c := config{}
	for _, o := range opts {
		o(&c)
	}
	if c.tp == nil {
		c.tp = otelapi.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otelapi.GetMeterProvider()
	}
	if c.lagTimeout <= 0 {
		c.lagTimeout = DefaultLagTimeout
	}
	t := &Telemetry{
		tracer:  c.tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		tracing: !isNoop(c.tp),
		meter:   c.mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL)),

		lagTimeout: c.lagTimeout,
	}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	t.publishDuration, err = t.meter.Float64Histogram("messaging.client.operation.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of Publish calls."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	add(err)
	t.processDuration, err = t.meter.Float64Histogram("messaging.process.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of handler runs, retries included."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	add(err)
	t.latency, err = t.meter.Float64Histogram("eventsource.event.latency",
		metric.WithUnit("s"), metric.WithDescription("Time from an event's OccurredAt to the end of a handler run."),
		metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
	add(err)
	add(t.stats.init(t.meter))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("otel: creating instruments: %w", err)
	}
	return t, nil
}

// isNoop reports a tracer provider that is OpenTelemetry's no-op one by
// type. The global provider is never taken for one: it forwards to the
// provider an application sets later.
func isNoop(tp trace.TracerProvider) bool {
	_, ok := tp.(noop.TracerProvider)
	return ok
}

// noSpan stands for a span where tracing is off.
var noSpan trace.Span = noop.Span{}
