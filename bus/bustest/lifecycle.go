package bustest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// The consumer lifecycle (bus.Bus, Lifecycle): a group's backlog waits for
// Start, however long the subscriptions take to be declared. A group that
// already consumed (so that a bus whose group exists only once it started,
// as a RabbitMQ queue, has one) is restarted with its subscriptions made
// one after the other: nothing may be read between them, and the type
// subscribed last gets its whole backlog.
func (s *suite) testBacklogWaitsForStart(t *testing.T) {
	if !s.features.ConsumerGroups {
		t.Skip("bus has no consumer groups, so no backlog")
	}
	ns := namespace(t)
	const group = "backlog"
	first := s.open(t, ns, group)
	for _, typ := range []string{Ping{}.EventType(), Pong{}.EventType()} {
		if _, err := first.Subscribe(typ, NewRecorder()); err != nil {
			t.Fatal(err)
		}
	}
	s.start(t, first)
	s.drain(t, first)

	pub := s.open(t, ns, "backlog-publisher")
	var pongs []eventsource.Envelope
	for i := range 200 {
		pongs = append(pongs, NewEnvelope(fmt.Sprintf("b%d", i%5), int64(i/5+1), Pong{N: i}))
	}
	if err := pub.Publish(s.ctx(t), append([]eventsource.Envelope{NewEnvelope("p", 1, Ping{N: -1})}, pongs...)...); err != nil {
		t.Fatal(err)
	}

	b := s.open(t, ns, group)
	pingRec, pongRec := NewRecorder(), NewRecorder()
	if _, err := b.Subscribe(Ping{}.EventType(), pingRec); err != nil {
		t.Fatal(err)
	}
	// Give a bus that (wrongly) consumes from the first subscription the
	// time to read the backlog and acknowledge the Pongs unhandled.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if n := b.Stats().Received; n > 0 {
			t.Fatalf("the bus read %d events before Start", n)
		}
		time.Sleep(10 * time.Millisecond) // polling for something that must not happen, for a bounded time
	}
	if _, err := b.Subscribe(Pong{}.EventType(), pongRec); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	pingRec.WaitFor(t, 1, s.features.Timeout)
	pongRec.WaitFor(t, len(pongs), s.features.Timeout)
	s.drain(t, b)
	assertSameSet(t, "the type subscribed last", pongRec.Got(), pongs)
}

// A subscription made after Start gets every event published after
// Subscribe returned.
func (s *suite) testSubscribeAfterStart(t *testing.T) {
	b := s.open(t, namespace(t), "")
	pings, pongs := NewRecorder(), NewRecorder()
	if _, err := b.Subscribe(Ping{}.EventType(), pings); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	if _, err := b.Subscribe(Pong{}.EventType(), pongs); err != nil {
		t.Fatalf("Subscribe after Start: %v", err)
	}
	want := []eventsource.Envelope{NewEnvelope("late", 1, Pong{N: 1}), NewEnvelope("late", 2, Pong{N: 2})}
	if err := b.Publish(s.ctx(t), append(want, NewEnvelope("late", 3, Ping{N: 3}))...); err != nil {
		t.Fatal(err)
	}
	pongs.WaitFor(t, len(want), s.features.Timeout)
	pings.WaitFor(t, 1, s.features.Timeout)
	s.drain(t, b)
	assertSameSet(t, "subscribed after Start", pongs.Got(), want)
}

// A handler's name is its identity: two subscriptions may not share one,
// whether given or derived from the same types.
func (s *suite) testHandlerNamesUnique(t *testing.T) {
	if !s.features.ConsumerGroups {
		t.Skip("names are an identity only where retries and dead letters outlive a process")
	}
	b := s.open(t, namespace(t), "")
	if _, err := b.Subscribe(Ping{}.EventType(), NewRecorder()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(Ping{}.EventType(), NewRecorder()); !errors.Is(err, bus.ErrInvalidSubscription) {
		t.Errorf("a second unnamed Ping subscription: %v; want ErrInvalidSubscription", err)
	}
	if _, err := b.Subscribe(Pong{}.EventType(), NewRecorder(), bus.WithName("audit")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SubscribeAll(NewRecorder(), bus.WithName("audit")); !errors.Is(err, bus.ErrInvalidSubscription) {
		t.Errorf("a second subscription named audit: %v; want ErrInvalidSubscription", err)
	}
	if _, err := b.Subscribe(Ping{}.EventType(), NewRecorder(), bus.WithName("second-ping")); err != nil {
		t.Errorf("a named second Ping subscription: %v", err)
	}
}

// Start is idempotent; after Close it returns ErrClosed.
func (s *suite) testStartIdempotent(t *testing.T) {
	b := s.open(t, namespace(t), "")
	rec := NewRecorder()
	if _, err := b.Subscribe(Ping{}.EventType(), rec); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	s.start(t, b)
	if err := b.Publish(s.ctx(t), NewEnvelope("s", 1, Ping{N: 1})); err != nil {
		t.Fatal(err)
	}
	rec.WaitFor(t, 1, s.features.Timeout)
	s.drain(t, b)
	if rec.Len() != 1 {
		t.Errorf("delivered %d times after two Starts; want once", rec.Len())
	}
	if err := b.Start(s.ctx(t)); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Start after Close = %v; want ErrClosed", err)
	}
}

// Every handler receives its event's metadata in its ctx, whatever the
// publisher's ctx held, so a handler that saves carries correlation and
// causation forward.
func (s *suite) testHandlersSeeMetadata(t *testing.T) {
	b := s.open(t, namespace(t), "")
	got := make(chan eventsource.Metadata, 1)
	if _, err := b.Subscribe(Ping{}.EventType(), bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
		md, _ := eventsource.MetadataFrom(ctx)
		got <- md
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	env := NewEnvelope("md", 1, Ping{N: 1})
	env.Metadata = eventsource.Metadata{CorrelationID: "corr-9", CausationID: "cause-9", TenantID: "t9",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Extra: map[string]string{"k": "v"}}
	if err := b.Publish(s.ctx(t), env); err != nil { // a ctx without metadata
		t.Fatal(err)
	}
	select {
	case md := <-got:
		if md.CorrelationID != "corr-9" || md.CausationID != "cause-9" || md.TenantID != "t9" ||
			!s.sameTrace(md.TraceParent, env.Metadata.TraceParent) || md.Extra["k"] != "v" {
			t.Errorf("handler's ctx carries %+v; want %+v", md, env.Metadata)
		}
	case <-time.After(s.features.Timeout):
		t.Fatal("handler never called")
	}
}

type middlewareKey struct{}

// A subscription's middleware wraps its handler once per delivery, with
// the handler's ctx, and may change it.
func (s *suite) testMiddlewareWrapsHandler(t *testing.T) {
	b := s.open(t, namespace(t), "")
	var mu sync.Mutex
	var order []string
	record := func(name string) bus.Middleware {
		return func(next bus.Handler) bus.Handler {
			return bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
				return next.Handle(context.WithValue(ctx, middlewareKey{}, name), env)
			})
		}
	}
	seen := make(chan any, 4)
	if _, err := b.Subscribe(Ping{}.EventType(), bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
		seen <- ctx.Value(middlewareKey{})
		return nil
	}), bus.WithMiddleware(record("outer"), record("inner"))); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	if err := b.Publish(s.ctx(t), NewEnvelope("mw", 1, Ping{N: 1})); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-seen:
		if v != "inner" {
			t.Errorf("the handler's ctx holds %v; want the innermost middleware's value", v)
		}
	case <-time.After(s.features.Timeout):
		t.Fatal("handler never called")
	}
	s.drain(t, b)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(order) != "[outer inner]" {
		t.Errorf("middleware ran %v; want [outer inner], once each", order)
	}
}
