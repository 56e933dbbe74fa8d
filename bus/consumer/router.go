package consumer

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
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
	byName   map[string][]*subscription
}

func (rt *routeTable) match(eventType string) []*subscription {
	if subs, ok := rt.byType[eventType]; ok {
		return subs
	}
	return rt.wildcard
}

// Subscribe registers h for one event type.
func (d *Dispatcher) Subscribe(eventType string, h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return d.SubscribeTypes([]string{eventType}, h, opts...)
}

// SubscribeTypes registers h once for several event types, so it sees them
// in one order (bus.MultiTypeSubscriber).
func (d *Dispatcher) SubscribeTypes(eventTypes []string, h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	if len(eventTypes) == 0 {
		return nil, fmt.Errorf("%w: no event types", bus.ErrInvalidSubscription)
	}
	if slices.Contains(eventTypes, "") {
		return nil, fmt.Errorf("%w: empty event type", bus.ErrInvalidSubscription)
	}
	return d.subscribe(slices.Compact(slices.Sorted(slices.Values(eventTypes))), h, opts)
}

// SubscribeAll registers h for every event type.
func (d *Dispatcher) SubscribeAll(h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return d.subscribe(nil, h, opts)
}

func (d *Dispatcher) subscribe(types []string, h bus.Handler, opts []bus.SubscribeOption) (bus.Subscription, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: nil handler", bus.ErrInvalidSubscription)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, bus.ErrClosed
	}
	d.seq++
	fallback := "*"
	if types != nil {
		fallback = strings.Join(types, ",")
	}
	cfg := bus.ApplySubscribeOptions(fallback+"#"+strconv.FormatUint(d.seq, 10), opts)
	if cfg.Async != nil {
		return nil, fmt.Errorf("%w: Async is for the in-process bus; broker-backed buses deliver from their own workers", bus.ErrInvalidSubscription)
	}
	s := &subscription{d: d, name: cfg.Name, types: types, handler: h}
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
	rt := &routeTable{byType: map[string][]*subscription{}, byName: map[string][]*subscription{}}
	for _, s := range d.subs {
		rt.byName[s.name] = append(rt.byName[s.name], s)
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
