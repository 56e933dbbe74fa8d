package repository

import (
	"context"

	"github.com/eventsource-go/eventsource"
)

// Instrumentation observes saves, for tracing: the otel module
// (github.com/eventsource-go/eventsource/otel) implements it. The core
// defines the hook so that it never depends on a telemetry library.
type Instrumentation interface {
	// StartSave runs before the append, with the events about to be
	// stored. It may set their metadata (the trace context, so that the
	// handlers of the events continue the caller's trace); the ctx it
	// returns is the one the append and the publish run with, and end is
	// called with Save's result.
	StartSave(ctx context.Context, aggregateType, streamID string, events []eventsource.Envelope) (_ context.Context, end func(error))
	// StartAppend runs around the store's append of n events.
	StartAppend(ctx context.Context, streamID string, n int) (_ context.Context, end func(error))
}

// WithInstrumentation makes Save report to i (see Instrumentation).
func WithInstrumentation(i Instrumentation) Option {
	return func(o *options) { o.instrumentation = i }
}

// append appends through the store, inside the instrumentation's append
// span when there is one.
func (r *Repository[A]) append(ctx context.Context, streamID string, expected int64, events []eventsource.Envelope) ([]eventsource.Envelope, error) {
	if r.instr == nil {
		return r.store.Append(ctx, streamID, expected, events)
	}
	ctx, end := r.instr.StartAppend(ctx, streamID, len(events))
	stored, err := r.store.Append(ctx, streamID, expected, events)
	end(err)
	return stored, err
}
