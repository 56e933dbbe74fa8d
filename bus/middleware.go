package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eventsource-go/eventsource"
)

// Middleware wraps a handler: logging, metrics, tracing, timeouts,
// idempotency. It is applied per subscription (WithMiddleware) and
// bus-wide (each bus's configuration); the bus-wide ones run outermost.
type Middleware func(Handler) Handler

// WithMiddleware wraps the subscription's handler in mws, the first
// outermost.
func WithMiddleware(mws ...Middleware) SubscribeOption {
	return func(c *SubscribeConfig) { c.Middleware = append(c.Middleware, mws...) }
}

// Chain wraps h in the bus-wide middleware, then the subscription's, the
// first of each outermost. With none it returns h itself, so a bus without
// middleware pays nothing for it.
func Chain(h Handler, busWide, perSubscription []Middleware) Handler {
	for i := len(perSubscription) - 1; i >= 0; i-- {
		h = perSubscription[i](h)
	}
	for i := len(busWide) - 1; i >= 0; i-- {
		h = busWide[i](h)
	}
	return h
}

// ErrPermanent matches an error a handler marked with Permanent: retrying
// cannot succeed (a payload the domain rejects), so a broker bus
// dead-letters the event at once, with reason "permanent", instead of
// spending its retry budget.
var ErrPermanent = errors.New("bus: permanent failure")

// Permanent marks err as permanent (see ErrPermanent); errors.Is and
// errors.As still reach err. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ err error }

func (e permanentError) Error() string   { return e.err.Error() }
func (e permanentError) Unwrap() []error { return []error{ErrPermanent, e.err} }

// Timeout bounds each run of the handler: its ctx ends after d, so a
// handler that honours its ctx returns (typically with an error matching
// context.DeadlineExceeded, retried like any failure). The bus does not
// abandon a handler that ignores its ctx: that would run it concurrently
// with the event's retry.
func Timeout(d time.Duration) Middleware {
	return func(next Handler) Handler {
		// The cause tells this deadline from the caller's ctx ending (the
		// bus closing, an outer deadline): only the former is named in the
		// error, so an unrelated failure does not read as a timeout.
		expired := fmt.Errorf("bus: handler timeout %v: %w", d, context.DeadlineExceeded)
		return HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
			ctx, cancel := context.WithTimeoutCause(ctx, d, expired)
			defer cancel()
			err := next.Handle(ctx, env)
			if err != nil && errors.Is(context.Cause(ctx), expired) {
				return fmt.Errorf("%w (timeout %v)", err, d)
			}
			return err
		})
	}
}
