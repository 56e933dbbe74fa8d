package otel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// Middleware runs each handler call in a consumer span ("process <event
// type>") whose parent is the producer's context carried by the event, and
// records its duration and the event's end-to-end latency, labelled with
// the subscription's name (bus.SubscriptionOf). The handler's ctx carries
// the span, so what it saves or publishes joins the trace. A panic is
// recorded and goes on to the bus.
func (bt *BusTelemetry) Middleware() bus.Middleware {
	return func(next bus.Handler) bus.Handler {
		h := &handler{bt: bt, next: next}
		if info, ok := bus.SubscriptionOf(next); ok {
			h.name = info.Name
			if len(info.EventTypes) == 1 {
				h.fixed = bt.labels.forProcess(info.EventTypes[0], info.Name)
			}
		}
		return h
	}
}

type handler struct {
	bt    *BusTelemetry
	next  bus.Handler
	name  string      // the subscription's, "" when the bus does not tell
	fixed *procLabels // the labels of a one-type subscription
}

func (h *handler) Handle(ctx context.Context, env eventsource.Envelope) (err error) {
	t := h.bt.t
	pl := h.fixed
	if pl == nil || pl.eventType != env.Type {
		pl = h.bt.labels.forProcess(env.Type, h.name)
	}
	start := time.Now()
	span := noSpan
	if t.tracing {
		// The event's context wins over ctx's span: on the in-process bus
		// ctx is the publisher's, whose span is the producer's parent.
		parent := ctx
		if sc := extract(&env.Metadata); sc.IsValid() {
			parent = trace.ContextWithRemoteSpanContext(ctx, sc)
		}
		ctx, span = t.tracer.Start(parent, pl.processName, consumerStart...)
		if span.IsRecording() {
			span.SetAttributes(pl.spanAttrs...)
			setEventAttributes(span, &env)
		}
	}
	defer h.finish(ctx, span, pl, env.OccurredAt, start, &err)
	return h.next.Handle(ctx, env)
}

// finish ends the span and records the run; a panic is recorded, then
// goes on to the bus, which turns it into a *bus.HandlerError.
func (h *handler) finish(ctx context.Context, span trace.Span, pl *procLabels, occurred, start time.Time, errp *error) {
	t := h.bt.t
	outcome := outcomeOK
	p := recover()
	switch err := *errp; {
	case p != nil:
		outcome = outcomePanic
		span.RecordError(fmt.Errorf("panic: %v", p), trace.WithStackTrace(true))
		span.SetStatus(codes.Error, "handler panicked")
	case err != nil:
		outcome = outcomeError
		if errors.Is(err, bus.ErrPermanent) {
			outcome = outcomePermanent
		}
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	end := time.Now()
	opt := pl.outcomes[outcome].record
	t.processDuration.Record(ctx, end.Sub(start).Seconds(), opt...)
	if !occurred.IsZero() {
		// Clamped at 0: the producer's clock may be ahead of ours, and a
		// negative measurement would make the histogram's sum decrease.
		t.latency.Record(ctx, max(end.Sub(occurred), 0).Seconds(), opt...)
	}
	if p != nil {
		panic(p)
	}
}
