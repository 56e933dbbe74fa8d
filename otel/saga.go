package otel

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsource-go/eventsource/bus"
)

// SystemSaga labels the events a saga runner is fed from the store
// (saga.Runner.Follow); on a bus, a saga is one more subscription.
const SystemSaga = "eventsource_saga"

// Attribute keys of saga spans.
const (
	SagaNameKey     = attribute.Key("eventsource.saga.name")
	SagaDeadlineKey = attribute.Key("eventsource.saga.deadline")
	SagaInstanceKey = attribute.Key("eventsource.saga.instance") // spans only
)

// SagaMiddleware returns the middleware of a saga runner named name that
// Follow feeds from the store, for saga.WithMiddleware: each event is a
// consumer span under the context the event was saved with, measured like
// a handler's, with messaging.system SystemSaga. A runner subscribed to an
// instrumented bus needs none: the bus's middleware covers it.
func (t *Telemetry) SagaMiddleware(name string) bus.Middleware {
	return t.busWith([]attribute.KeyValue{semconv.MessagingSystemKey.String(SystemSaga),
		FollowerKindKey.String("saga"), FollowerNameKey.String(name)}).Middleware()
}

// SagaDeadlines returns the observer of the deadlines saga runners fire,
// for saga.WithDeadlineObserver: each firing is a span ("deadline
// <name>") under ctx's span, if any, with the saga, the deadline's name
// and the instance; the commands its handler dispatches join its trace.
func (t *Telemetry) SagaDeadlines() DeadlineTracer { return DeadlineTracer{t} }

// DeadlineTracer traces saga deadlines (see Telemetry.SagaDeadlines).
type DeadlineTracer struct{ t *Telemetry }

// StartDeadline starts the span of one deadline's firing.
func (d DeadlineTracer) StartDeadline(ctx context.Context, saga, instance, deadline string) (context.Context, func(error)) {
	ctx, span := d.t.tracer.Start(ctx, "deadline "+deadline, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(SagaNameKey.String(saga), SagaDeadlineKey.String(deadline), SagaInstanceKey.String(instance)))
	return ctx, endFunc(span)
}
