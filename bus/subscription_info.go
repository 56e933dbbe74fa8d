package bus

import (
	"context"

	"github.com/eventsource-go/eventsource"
)

// SubscriptionInfo describes the subscription a handler runs for, so that
// a bus-wide middleware (metrics, tracing, logging) can tell handlers
// apart: a Middleware is one function per bus, called once per
// subscription to build its chain.
type SubscriptionInfo struct {
	Name       string   // the subscription's name (see Bus, Handler identity)
	EventTypes []string // sorted; nil for a wildcard
}

// SubscriptionOf returns the subscription a middleware is building a
// handler for: called by the middleware with the next handler it is
// given, on a bus that builds its chains with ChainFor (every bus of this
// module does). It is meant for the middleware's construction, so that
// what depends on the subscription (a label, a logger) is prepared once,
// not per event:
//
//	func Logging(log *slog.Logger) bus.Middleware {
//		return func(next bus.Handler) bus.Handler {
//			info, _ := bus.SubscriptionOf(next)
//			log := log.With("handler", info.Name)
//			...
//		}
//	}
func SubscriptionOf(next Handler) (SubscriptionInfo, bool) {
	h, ok := next.(subscriptionHandler)
	if !ok {
		return SubscriptionInfo{}, false
	}
	return *h.info, true
}

// ChainFor is Chain for one subscription: each middleware is given a next
// handler that SubscriptionOf recognises. With no middleware it returns h
// itself, so a bus without middleware pays nothing for it; with some, a
// call costs one more method call per middleware and no allocation.
func ChainFor(info SubscriptionInfo, h Handler, busWide, perSubscription []Middleware) Handler {
	if len(busWide) == 0 && len(perSubscription) == 0 {
		return h
	}
	p := &info
	wrap := func(mw Middleware) { h = mw(subscriptionHandler{info: p, next: h}) }
	for i := len(perSubscription) - 1; i >= 0; i-- {
		wrap(perSubscription[i])
	}
	for i := len(busWide) - 1; i >= 0; i-- {
		wrap(busWide[i])
	}
	return h
}

// subscriptionHandler marks the next handler given to a middleware.
type subscriptionHandler struct {
	info *SubscriptionInfo
	next Handler
}

func (h subscriptionHandler) Handle(ctx context.Context, env eventsource.Envelope) error {
	return h.next.Handle(ctx, env)
}
