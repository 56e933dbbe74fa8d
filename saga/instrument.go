package saga

import (
	"context"
	"slices"

	"github.com/eventsource-go/eventsource/bus"
)

// WithMiddleware wraps the runner's handling of each event that Follow
// feeds it, as a bus wraps a subscription's handler in its middleware
// (tracing, metrics, logging); the middleware learns the runner's
// HandlerName and the saga's event types from bus.SubscriptionOf. On a
// bus, the bus's own middleware does this instead.
func WithMiddleware(mws ...bus.Middleware) Option {
	return func(c *config) { c.middleware = append(c.middleware, mws...) }
}

// DeadlineObserver observes the firing of deadlines, for tracing: the
// otel module implements it. The saga package defines the hook so that it
// never depends on a telemetry library.
type DeadlineObserver interface {
	// StartDeadline runs before a due deadline is delivered to its
	// instance; the ctx it returns is the one the deadline's handler, and
	// the commands it dispatches, run with, and end is called with the
	// outcome.
	StartDeadline(ctx context.Context, saga, instance, deadline string) (_ context.Context, end func(error))
}

// WithDeadlineObserver makes the runner report each deadline it fires to
// o (see DeadlineObserver).
func WithDeadlineObserver(o DeadlineObserver) Option {
	return func(c *config) { c.deadlines = o }
}

// followHandler is what Follow feeds: Handle in the runner's middleware.
func (r *Runner[S]) followHandler() bus.Handler {
	info := bus.SubscriptionInfo{Name: r.HandlerName(), EventTypes: slices.Sorted(slices.Values(r.saga.EventTypes()))}
	return bus.ChainFor(info, bus.HandlerFunc(r.Handle), nil, r.cfg.middleware)
}

// observedFire is fire, reported to the runner's DeadlineObserver.
func (r *Runner[S]) observedFire(ctx context.Context, d Deadline) (bool, error) {
	if r.cfg.deadlines == nil || isOutboxRow(d) {
		return r.fire(ctx, d)
	}
	ctx, end := r.cfg.deadlines.StartDeadline(ctx, r.saga.name, d.Instance, d.Name)
	ok, err := r.fire(ctx, d)
	end(err)
	return ok, err
}
