package consumer

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"sync/atomic"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// subscription is one local handler registration.
type subscription struct {
	d       *Dispatcher
	name    string
	types   []string // sorted; nil for a wildcard
	handler bus.Handler
	removed atomic.Bool
}

// routeTable is immutable; subscribing swaps in a new one, so the dispatch
// path reads it with one atomic load.
type routeTable struct {
	byType   map[string][]*subscription // wildcards merged in, registration order
	wildcard []*subscription
	byName   map[string]*subscription
}

func (rt *routeTable) match(eventType string) []*subscription {
	if subs, ok := rt.byType[eventType]; ok {
		return subs
	}
	return rt.wildcard
}

// Subscribe registers h for one event type. A broker bus subscribes
// through its Front; this registers the handler only.
func (d *Dispatcher) Subscribe(eventType string, h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return asSubscription(d.subscribeTypes([]string{eventType}, h, opts))
}

// SubscribeTypes registers h once for several event types.
func (d *Dispatcher) SubscribeTypes(eventTypes []string, h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return asSubscription(d.subscribeTypes(eventTypes, h, opts))
}

// SubscribeAll registers h for every event type.
func (d *Dispatcher) SubscribeAll(h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return asSubscription(d.subscribe(nil, h, opts))
}

// asSubscription keeps a nil *subscription from becoming a non-nil
// interface.
func asSubscription(s *subscription, err error) (bus.Subscription, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (d *Dispatcher) subscribeTypes(eventTypes []string, h bus.Handler, opts []bus.SubscribeOption) (*subscription, error) {
	if len(eventTypes) == 0 {
		return nil, fmt.Errorf("%w: no event types", bus.ErrInvalidSubscription)
	}
	if slices.Contains(eventTypes, "") {
		return nil, fmt.Errorf("%w: empty event type", bus.ErrInvalidSubscription)
	}
	return d.subscribe(slices.Compact(slices.Sorted(slices.Values(eventTypes))), h, opts)
}

// DefaultHandlerName is the name of a subscription made without
// bus.WithName: its sorted event types joined by commas, or "*" for a
// wildcard. It depends on nothing but the subscription, so it is the same
// in every process and deploy (see bus.Bus, Handler identity).
func DefaultHandlerName(sortedTypes []string) string {
	return bus.DefaultSubscriptionName(sortedTypes)
}

func (d *Dispatcher) subscribe(types []string, h bus.Handler, opts []bus.SubscribeOption) (*subscription, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: nil handler", bus.ErrInvalidSubscription)
	}
	cfg := bus.ApplySubscribeOptions(bus.DefaultSubscriptionName(types), opts)
	if cfg.Async != nil {
		return nil, fmt.Errorf("%w: Async is for the in-process bus; broker-backed buses deliver from their own workers", bus.ErrInvalidSubscription)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, bus.ErrClosed
	}
	if _, taken := d.routes.Load().byName[cfg.Name]; taken {
		return nil, fmt.Errorf("%w: a handler named %q is subscribed already; a name identifies one handler in retries and dead letters, so give each its own with bus.WithName",
			bus.ErrInvalidSubscription, cfg.Name)
	}
	s := &subscription{d: d, name: cfg.Name, types: types, handler: bus.ChainFor(bus.SubscriptionInfo{Name: cfg.Name, EventTypes: types}, h, d.cfg.Middleware, cfg.Middleware)}
	d.subs = append(d.subs, s)
	d.rebuildLocked()
	return s, nil
}

// Unsubscribe removes the registration; events dispatched to workers after
// it returns, retries included, skip the handler.
func (s *subscription) Unsubscribe() error {
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.removed.Swap(true) {
		return nil
	}
	if i := slices.Index(d.subs, s); i >= 0 {
		d.subs = slices.Delete(d.subs, i, i+1)
	}
	d.rebuildLocked()
	return nil
}

func (d *Dispatcher) rebuildLocked() {
	rt := &routeTable{byType: map[string][]*subscription{}, byName: map[string]*subscription{}}
	for _, s := range d.subs {
		rt.byName[s.name] = s
		if s.types == nil {
			rt.wildcard = append(rt.wildcard, s)
			continue
		}
		for _, t := range s.types {
			rt.byType[t] = nil
		}
	}
	for t := range rt.byType {
		var merged []*subscription
		for _, s := range d.subs {
			if s.types == nil || slices.Contains(s.types, t) {
				merged = append(merged, s)
			}
		}
		rt.byType[t] = merged
	}
	d.routes.Store(rt)
}

// wants reports whether s is subscribed to eventType.
func (s *subscription) wants(eventType string) bool {
	return s.types == nil || slices.Contains(s.types, eventType)
}

// HasSubscribers reports whether any handler is registered.
func (d *Dispatcher) HasSubscribers() bool {
	rt := d.routes.Load()
	return len(rt.byName) > 0
}

// call runs the handler, turning an error or a panic into a
// *bus.HandlerError.
func (s *subscription) call(ctx context.Context, env *eventsource.Envelope) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &bus.HandlerError{Handler: s.name, EventType: env.Type, EventID: env.ID.String(),
				Err: bus.ErrHandlerPanic, Panic: p, Stack: debug.Stack()}
		}
	}()
	if err := s.handler.Handle(ctx, *env); err != nil {
		return &bus.HandlerError{Handler: s.name, EventType: env.Type, EventID: env.ID.String(), Err: err}
	}
	return nil
}
