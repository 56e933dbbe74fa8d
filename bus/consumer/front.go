package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/internal/sleep"
)

// Transport is what a broker bus plugs into a Front: the part of starting
// that talks to its broker.
type Transport interface {
	// StartConsuming declares on the broker what the subscriptions need
	// (groups, queues, bindings) and starts reading. Front calls it once,
	// from Start, with at least one subscription registered.
	StartConsuming(ctx context.Context) error
}

// Binder is implemented by transports whose broker routes by type (AMQP
// bindings): Front tells them which types the subscriptions want, started
// or not. types is nil for a wildcard subscription.
type Binder interface {
	// Bind checks that the broker can route types and makes it route them
	// to the group once consuming (at once, if it has started). An error
	// refuses the subscription.
	Bind(types []string) error
	// Unbind undoes one Bind of the same types.
	Unbind(types []string) error
}

// Front is the side of a broker bus that every transport shares: the
// subscription API over a Dispatcher and the explicit start (see bus.Bus,
// Lifecycle). A bus embeds it and adds Publish and Close; its Gate keeps
// Publish, Subscribe and Start from running into Close.
type Front struct {
	d    *Dispatcher
	t    Transport
	gate *Gate

	startMu sync.Mutex
	started bool
}

// NewFront returns the front of a bus consuming through d and t, behind
// gate.
func NewFront(d *Dispatcher, t Transport, gate *Gate) *Front { return &Front{d: d, t: t, gate: gate} }

// Gate lets calls into a bus run concurrently until Close shuts it. The
// zero value is open.
type Gate struct {
	mu     sync.RWMutex // held shared by every call running
	closed atomic.Bool
}

// Subscribe registers h for one event type.
func (f *Front) Subscribe(eventType string, h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return f.SubscribeTypes([]string{eventType}, h, opts...)
}

// SubscribeTypes registers h once for several event types, so it sees
// them in one order (bus.MultiTypeSubscriber).
func (f *Front) SubscribeTypes(eventTypes []string, h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return f.subscribe(eventTypes, func() (*subscription, error) { return f.d.subscribeTypes(eventTypes, h, opts) })
}

// SubscribeAll registers h for every event type.
func (f *Front) SubscribeAll(h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return f.subscribe(nil, func() (*subscription, error) { return f.d.subscribe(nil, h, opts) })
}

func (f *Front) subscribe(types []string, register func() (*subscription, error)) (bus.Subscription, error) {
	if err := f.gate.Enter(); err != nil {
		return nil, err
	}
	defer f.gate.Leave()
	s, err := register()
	if err != nil {
		return nil, err
	}
	binder, ok := f.t.(Binder)
	if !ok {
		return s, nil
	}
	if err := binder.Bind(s.types); err != nil {
		return nil, errors.Join(err, s.Unsubscribe())
	}
	return &boundSubscription{subscription: s, binder: binder}, nil
}

// boundSubscription also undoes its Bind.
type boundSubscription struct {
	*subscription
	binder Binder
	once   sync.Once
	err    error
}

func (s *boundSubscription) Unsubscribe() error {
	s.once.Do(func() { s.err = errors.Join(s.subscription.Unsubscribe(), s.binder.Unbind(s.types)) })
	return s.err
}

// Start starts consuming (bus.Bus). Starting with no subscription is an
// error: the group would acknowledge its backlog with no handler to run.
func (f *Front) Start(ctx context.Context) error {
	if err := f.gate.Enter(); err != nil {
		return err
	}
	defer f.gate.Leave()
	f.startMu.Lock()
	defer f.startMu.Unlock()
	if f.started {
		return nil
	}
	if !f.d.HasSubscribers() {
		return fmt.Errorf("%w: Start with no subscription would acknowledge the group's events unhandled; subscribe first", bus.ErrInvalidSubscription)
	}
	if err := f.t.StartConsuming(ctx); err != nil {
		return err
	}
	f.started = true
	return nil
}

// Started reports whether Start has succeeded.
func (f *Front) Started() bool {
	f.startMu.Lock()
	defer f.startMu.Unlock()
	return f.started
}

// Enter holds the gate shared; it fails with bus.ErrClosed once Shut has
// run. Every successful Enter needs a Leave.
func (g *Gate) Enter() error {
	g.mu.RLock()
	if g.closed.Load() {
		g.mu.RUnlock()
		return bus.ErrClosed
	}
	return nil
}

// Leave releases what Enter took.
func (g *Gate) Leave() { g.mu.RUnlock() }

// EnterPublish is Enter plus the checks every Publish makes first. With
// no events it reports false and holds nothing.
func (g *Gate) EnterPublish(events []eventsource.Envelope) (bool, error) {
	if err := bus.ValidateEnvelopes(events); err != nil {
		return false, err
	}
	if err := g.Enter(); err != nil {
		return false, err
	}
	if len(events) == 0 {
		g.Leave()
		return false, nil
	}
	return true, nil
}

// Shut refuses new calls and waits, up to ctx, for those running to
// return; Close calls it first. When ctx ends first it returns an error
// matching ctx's: Close then goes on, and closing the connections is what
// ends a Publish that waits for ever (a blocked broker, a call without a
// deadline).
func (g *Gate) Shut(ctx context.Context) error {
	g.closed.Store(true)
	// Polled, not a blocking Lock: a Lock cannot be abandoned at ctx's
	// end, and a goroutine blocked on it would outlive Close.
	for wait := 100 * time.Microsecond; !g.mu.TryLock(); wait = min(2*wait, 10*time.Millisecond) {
		if !sleep.For(ctx, wait) {
			return fmt.Errorf("calls still running: %w", ctx.Err())
		}
	}
	g.mu.Unlock()
	return nil
}

// Stats returns the bus's counters.
func (f *Front) Stats() bus.Stats { return f.d.Stats() }
