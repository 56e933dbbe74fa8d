package otel

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// labels caches, per event type and per handler, what every event of a
// bus would otherwise build again: span names, span attributes and
// measurement attribute sets (an attribute.Set is sorted and hashed when
// made). The keys are event types and handler names, so the caches are as
// bounded as the metrics' series. They are sync.Maps: read on every
// event by every worker, written once per key.
type labels struct {
	base []attribute.KeyValue

	types sync.Map // event type -> *typeLabels
	procs sync.Map // procKey -> *procLabels
}

// Span start options hold the span kind only: the SDK's samplers decide on
// the parent and the trace ID, and an attribute option copies its
// attributes on every start, sampled or not. The attributes are set once a
// span records.
var (
	producerStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	consumerStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
)

// typeLabels are the producer side's, per event type.
type typeLabels struct {
	publishName string
	spanAttrs   []attribute.KeyValue // base, operation, destination
}

type procKey struct{ eventType, handler string }

// procLabels are a handler's, per event type.
type procLabels struct {
	eventType   string
	processName string
	spanAttrs   []attribute.KeyValue // base, operation, destination, handler
	outcomes    [outcomeCount]measure
}

// Indexes of procLabels.outcomes.
const (
	outcomeOK = iota
	outcomeError
	outcomePanic
	outcomePermanent
	outcomeCount
)

var outcomeNames = [outcomeCount]string{OutcomeOK, OutcomeError, OutcomePanic, OutcomePermanent}

func newLabels(base []attribute.KeyValue) *labels {
	return &labels{base: base}
}

// measure is one attribute set as the options of Add and Record, made
// once: the variadic option slices would otherwise be made per call.
type measure struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

func (l *labels) withBase(kvs ...attribute.KeyValue) measure {
	opt := metric.WithAttributeSet(attribute.NewSet(l.attrs(kvs...)...))
	return measure{add: []metric.AddOption{opt}, record: []metric.RecordOption{opt}}
}

// attrs returns the base attributes followed by kvs, in a new slice.
func (l *labels) attrs(kvs ...attribute.KeyValue) []attribute.KeyValue {
	all := make([]attribute.KeyValue, 0, len(l.base)+len(kvs))
	return append(append(all, l.base...), kvs...)
}

func (l *labels) forType(eventType string) *typeLabels {
	if tl, ok := l.types.Load(eventType); ok {
		return tl.(*typeLabels)
	}
	tl := &typeLabels{
		publishName: "publish " + eventType,
		spanAttrs: l.attrs(semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("publish"),
			semconv.MessagingDestinationName(eventType)),
	}
	got, _ := l.types.LoadOrStore(eventType, tl)
	return got.(*typeLabels)
}

func (l *labels) forProcess(eventType, handler string) *procLabels {
	k := procKey{eventType: eventType, handler: handler}
	if pl, ok := l.procs.Load(k); ok {
		return pl.(*procLabels)
	}
	dest := semconv.MessagingDestinationName(eventType)
	pl := &procLabels{
		eventType:   eventType,
		processName: "process " + eventType,
		spanAttrs:   l.attrs(semconv.MessagingOperationTypeProcess, semconv.MessagingOperationName("process"), dest),
	}
	if handler != "" {
		pl.spanAttrs = append(pl.spanAttrs, HandlerKey.String(handler))
	}
	for i, o := range outcomeNames {
		// The semantic conventions require the operation's name on
		// messaging.process.duration, and error.type on a failed run's.
		kvs := []attribute.KeyValue{semconv.MessagingOperationName("process"), dest, OutcomeKey.String(o)}
		if i != outcomeOK {
			kvs = append(kvs, semconv.ErrorTypeOther)
		}
		if handler != "" {
			kvs = append(kvs, HandlerKey.String(handler))
		}
		pl.outcomes[i] = l.withBase(kvs...)
	}
	got, _ := l.procs.LoadOrStore(k, pl)
	return got.(*procLabels)
}
