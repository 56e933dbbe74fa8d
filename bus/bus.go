// Package bus publishes events to handlers, projections and sagas.
//
// Bus is the one interface every implementation satisfies: the in-process
// bus in this package, and the broker-backed buses in bus/redis,
// bus/rabbitmq and bus/kafka. Handlers subscribe by event type name, to the
// list of types a projection declares, or to everything. The conformance
// suite in bus/bustest checks the semantics they share.
package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/eventsource-go/eventsource"
)

// Bus publishes envelopes to the handlers subscribed to their types.
//
// # Lifecycle
//
// Subscriptions are declared first, then Start begins consuming. On a
// broker-backed bus nothing is read before Start, so no event of a
// declared type is acknowledged before its handler exists: a group's
// backlog waits for Start. A subscription made after Start receives every
// event published after Subscribe returns (and possibly earlier ones the
// group had not consumed yet); events the group consumed before it are not
// delivered to it again. The in-process bus has no backlog: its
// subscriptions take effect when Subscribe returns, and Start is a no-op
// there, so code written against Bus calls Start and runs on every bus.
//
// # Handler identity
//
// A subscription's name (WithName) is its identity in retries, dead letters
// and replays, so on a broker-backed bus it must be the same in every
// process and deploy. Without WithName a subscription is named after its
// event types ("OrderPlaced", "OrderPaid,OrderPlaced" sorted, "*" for a
// wildcard); a second subscription with a name already in use is refused
// with ErrInvalidSubscription. The in-process bus has no retries or dead
// letters: there a name only labels logs and errors, and several handlers
// may share one.
type Bus interface {
	// Publish hands events to the bus. What "returned" promises depends on
	// the implementation: the in-process bus has run every synchronous
	// handler; a broker-backed bus has the broker's acknowledgement. A
	// failing handler never makes Publish fail.
	Publish(ctx context.Context, events ...eventsource.Envelope) error
	// Subscribe registers h for one event type name.
	Subscribe(eventType string, h Handler, opts ...SubscribeOption) (Subscription, error)
	// SubscribeAll registers h for every event type (a wildcard).
	SubscribeAll(h Handler, opts ...SubscribeOption) (Subscription, error)
	// Start begins consuming what the subscriptions declared (see
	// Lifecycle). It is idempotent; after Close it returns ErrClosed.
	Start(ctx context.Context) error
	// Stats returns a snapshot of the bus's counters.
	Stats() Stats
	// Close stops accepting events, drains work in flight, then stops every
	// goroutine the bus started. It is idempotent; a ctx that ends first
	// abandons the drain and returns ctx.Err().
	Close(ctx context.Context) error
}

// BackgroundPublisher is implemented by buses that can publish without
// waiting for delivery.
type BackgroundPublisher interface {
	// PublishAsync queues events and returns without waiting for handlers.
	// It blocks only while the bus's bound on queued work is reached.
	PublishAsync(ctx context.Context, events ...eventsource.Envelope) error
}

// RawPublisher is implemented by a bus that encodes what it publishes, as
// every broker bus does: given an envelope whose Event is an
// eventsource.RawEvent, it writes the stored payload as it is, and its
// consumers decode it as any event. The outbox relay reads stored events
// undecoded for such a bus only; any other bus (the in-process one, whose
// handlers get the published values, or a decorator without Unwrap) is
// given decoded events.
type RawPublisher interface {
	Bus
	PublishesRaw()
}

// MultiTypeSubscriber is implemented by buses that can register one handler
// for several event types as a single subscription, so that the handler sees
// events of all those types in one order (asynchronous delivery would
// otherwise run one queue per type). SubscribeProjection uses it.
type MultiTypeSubscriber interface {
	SubscribeTypes(eventTypes []string, h Handler, opts ...SubscribeOption) (Subscription, error)
}

// Handler handles one event. An error (or a panic) is counted and logged by
// the bus and, on broker-backed buses, decides retry or dead-letter.
type Handler interface {
	Handle(ctx context.Context, env eventsource.Envelope) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, env eventsource.Envelope) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, env eventsource.Envelope) error { return f(ctx, env) }

// Subscription is one registration of a handler.
type Subscription interface {
	// Unsubscribe removes the registration; events published after it
	// returns are not delivered to the handler. Calling it twice is a no-op.
	Unsubscribe() error
}

// Projection is a handler that declares the event types it reads. The
// projection package builds runners and checkpoints on the same interface.
type Projection interface {
	Handler
	EventTypes() []string
}

// Errors shared by every bus.
var (
	// ErrClosed is returned by a bus that has been closed.
	ErrClosed = errors.New("bus: closed")
	// ErrInvalidSubscription: an empty type name, a nil handler, or an
	// option the bus does not support.
	ErrInvalidSubscription = errors.New("bus: invalid subscription")
	// ErrHandlerPanic matches a *HandlerError whose handler panicked.
	ErrHandlerPanic = errors.New("bus: handler panicked")
	// ErrTooLarge matches a Publish error for an event whose encoded form
	// is over what the broker takes (its configured maximum message size):
	// publishing it again cannot succeed. The bus goes on with the others.
	ErrTooLarge = errors.New("bus: event too large for the broker")
)

// ValidateEnvelopes checks what every bus needs of an envelope before it
// publishes any of them: a type name and a payload.
func ValidateEnvelopes(events []eventsource.Envelope) error {
	for i := range events {
		if events[i].Type == "" || events[i].Event == nil {
			return fmt.Errorf("%w: envelope %d has no type or no payload", eventsource.ErrInvalidEvent, i)
		}
	}
	return nil
}

// HandlerError is what the bus logs and counts when a handler fails.
type HandlerError struct {
	Handler   string // the subscription's name
	EventType string
	EventID   string
	Err       error  // the handler's error, or ErrHandlerPanic
	Panic     any    // the recovered value, if the handler panicked
	Stack     []byte // the panicking goroutine's stack
}

func (e *HandlerError) Error() string {
	if e.Panic != nil {
		return fmt.Sprintf("bus: handler %q panicked on %s %s: %v", e.Handler, e.EventType, e.EventID, e.Panic)
	}
	return fmt.Sprintf("bus: handler %q failed on %s %s: %v", e.Handler, e.EventType, e.EventID, e.Err)
}

func (e *HandlerError) Unwrap() error { return e.Err }

// On subscribes a typed function: fn receives the payload as E, with no type
// assertion in user code. An envelope whose payload is not an E (another Go
// type registered under the same name) fails with a Permanent error
// matching eventsource.ErrInvalidEvent.
func On[E eventsource.Event](b Bus, fn func(ctx context.Context, e E, env eventsource.Envelope) error, opts ...SubscribeOption) (Subscription, error) {
	name, err := eventsource.TypeNameOf[E]()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSubscription, err)
	}
	return b.Subscribe(name, typedHandler[E]{fn: fn}, opts...)
}

// typedHandler is a struct rather than a HandlerFunc closure: one indirect
// call and one envelope copy fewer per event on the dispatch path.
type typedHandler[E eventsource.Event] struct {
	fn func(ctx context.Context, e E, env eventsource.Envelope) error
}

func (h typedHandler[E]) Handle(ctx context.Context, env eventsource.Envelope) error {
	// Check first and assert again in the call: asserting into a local and
	// passing it on makes the compiler copy the payload twice, with a
	// store-forwarding stall in between.
	if _, ok := env.Event.(E); !ok {
		// Permanent: the same payload decodes to the same Go type on every
		// retry, so a broker bus dead-letters it at once.
		var want E
		return Permanent(fmt.Errorf("%w: %s payload is %T, handler expects %T",
			eventsource.ErrInvalidEvent, env.Type, env.Event, want))
	}
	return h.fn(ctx, env.Event.(E), env)
}

// SubscribeProjection subscribes p to every type it declares. The returned
// subscription removes all of them; if one fails, none stays registered.
func SubscribeProjection(b Bus, p Projection, opts ...SubscribeOption) (Subscription, error) {
	types := p.EventTypes()
	if len(types) == 0 {
		return nil, fmt.Errorf("%w: projection %T declares no event types", ErrInvalidSubscription, p)
	}
	if m, ok := b.(MultiTypeSubscriber); ok {
		return m.SubscribeTypes(types, p, opts...)
	}
	subs := make(multiSubscription, 0, len(types))
	for _, t := range types {
		s, err := b.Subscribe(t, p, opts...)
		if err != nil {
			return nil, errors.Join(err, subs.Unsubscribe())
		}
		subs = append(subs, s)
	}
	return subs, nil
}

type multiSubscription []Subscription

func (m multiSubscription) Unsubscribe() error {
	var errs []error
	for _, s := range m {
		errs = append(errs, s.Unsubscribe())
	}
	return errors.Join(errs...)
}

// SubscribeConfig is what SubscribeOptions set. Buses read it with
// ApplySubscribeOptions; an option a bus cannot honour is an error there.
type SubscribeConfig struct {
	// Name identifies the subscription in logs, stats, retries and dead
	// letters; see Bus (Handler identity).
	Name string
	// Async, when set, delivers through a bounded buffer drained by the
	// subscription's own goroutine (in-process bus only).
	Async *AsyncConfig
	// Middleware wraps this subscription's handler (WithMiddleware).
	Middleware []Middleware
}

// SubscribeOption configures one subscription.
type SubscribeOption func(*SubscribeConfig)

// WithName names the subscription.
func WithName(name string) SubscribeOption {
	return func(c *SubscribeConfig) { c.Name = name }
}

// OverflowPolicy says what an asynchronous subscription does when its
// buffer is full.
type OverflowPolicy int

const (
	// Block makes the publisher wait for room: backpressure.
	Block OverflowPolicy = iota
	// DropNewest discards the event for this subscriber and counts it in
	// Stats.Dropped; the publisher never waits.
	DropNewest
)

func (p OverflowPolicy) String() string {
	switch p {
	case Block:
		return "block"
	case DropNewest:
		return "drop-newest"
	}
	return fmt.Sprintf("OverflowPolicy(%d)", int(p))
}

// AsyncConfig configures asynchronous delivery to one subscriber.
type AsyncConfig struct {
	Buffer   int // capacity of the subscriber's queue, at least 1
	Overflow OverflowPolicy
}

// Async delivers to the subscriber from its own goroutine through a buffer
// of the given size; events keep their publish order for that subscriber.
func Async(buffer int, overflow OverflowPolicy) SubscribeOption {
	return func(c *SubscribeConfig) { c.Async = &AsyncConfig{Buffer: buffer, Overflow: overflow} }
}

// DefaultSubscriptionName is the name of a subscription made without
// WithName: its sorted event types joined by commas, or "*" for a
// wildcard (nil). It depends on nothing but the subscription, so it is the
// same in every process and deploy (see Bus, Handler identity).
func DefaultSubscriptionName(sortedTypes []string) string {
	if sortedTypes == nil {
		return "*"
	}
	return strings.Join(sortedTypes, ",")
}

// ApplySubscribeOptions builds the config for a subscription, naming it
// fallbackName when no name was given.
func ApplySubscribeOptions(fallbackName string, opts []SubscribeOption) SubscribeConfig {
	var c SubscribeConfig
	for _, o := range opts {
		o(&c)
	}
	if c.Name == "" {
		c.Name = fallbackName
	}
	return c
}

// HandlerContext returns the context a handler of env runs with: ctx,
// carrying env's metadata (eventsource.MetadataFrom) so that a handler
// that saves (a saga, a process manager) carries correlation, causation
// and trace context forward. ctx is returned as is when env has no
// metadata or ctx carries the same already (a Save publishing what it
// stamped), which keeps the synchronous path free of allocations.
func HandlerContext(ctx context.Context, env *eventsource.Envelope) context.Context {
	if env.Metadata.IsZero() {
		return ctx
	}
	if md, ok := eventsource.MetadataFrom(ctx); ok && sameMetadata(&md, &env.Metadata) {
		return ctx
	}
	return eventsource.WithMetadata(ctx, env.Metadata)
}

func sameMetadata(a, b *eventsource.Metadata) bool {
	if a.CorrelationID != b.CorrelationID || a.CausationID != b.CausationID || a.TenantID != b.TenantID ||
		a.TraceParent != b.TraceParent || a.TraceState != b.TraceState || len(a.Extra) != len(b.Extra) {
		return false
	}
	for k, v := range a.Extra {
		if w, ok := b.Extra[k]; !ok || w != v {
			return false
		}
	}
	return true
}
