package otel

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/repository"
)

// Repository returns the instrumentation of repository.Save, for
// repository.WithInstrumentation: a span per Save under the caller's
// active span, a child span for the append, and the save span's context
// written into the metadata of the events stored, so that their handlers,
// however and whenever they are published (the outbox relay included),
// join the caller's trace.
func (t *Telemetry) Repository() repository.Instrumentation { return repoInstrumentation{t} }

type repoInstrumentation struct{ t *Telemetry }

func (r repoInstrumentation) StartSave(ctx context.Context, aggregateType, streamID string, events []eventsource.Envelope) (context.Context, func(error)) {
	ctx, span := r.t.tracer.Start(ctx, "save "+aggregateType,
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(AggregateTypeKey.String(aggregateType), StreamIDKey.String(streamID),
			EventCountKey.Int(len(events))))
	for i := range events {
		inject(span.SpanContext(), &events[i].Metadata)
	}
	return ctx, endFunc(span)
}

func (r repoInstrumentation) StartAppend(ctx context.Context, streamID string, n int) (context.Context, func(error)) {
	ctx, span := r.t.tracer.Start(ctx, "append",
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(StreamIDKey.String(streamID), EventCountKey.Int(n)))
	return ctx, endFunc(span)
}

func endFunc(span trace.Span) func(error) {
	return func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}
