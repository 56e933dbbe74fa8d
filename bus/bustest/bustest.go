// Package bustest is the conformance suite every bus passes. A bus declares
// what it guarantees beyond the shared semantics with Features; the suite
// runs the cases that apply and skips the others, saying why.
//
//	func TestConformance(t *testing.T) {
//		bustest.Run(t, bustest.Features{ConsumerGroups: true, OrderingPerAggregate: true},
//			func(t *testing.T, cfg bustest.Config) bus.Bus { return open(t, cfg) })
//	}
//
// Buses with a dead-letter destination also pass RunDeadLetters.
package bustest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// Features declares what a bus guarantees beyond the shared semantics.
type Features struct {
	// Synchronous: Publish returns after every handler has run, so results
	// are checked without waiting.
	Synchronous bool
	// ConsumerGroups: instances opened with the same Config.Group share the
	// events (each handled once per group); other groups each get all.
	ConsumerGroups bool
	// OrderingPerAggregate: events of one aggregate reach each handler in
	// publish order.
	OrderingPerAggregate bool
	// Persistence: a subscriber in a new group receives events published
	// before it subscribed.
	Persistence bool
	// MaxEventBytes is the largest encoded event the bus opened by the
	// factory publishes; a larger one must fail with bus.ErrTooLarge. 0:
	// no limit the suite can reach cheaply, and the test is skipped.
	MaxEventBytes int
	// TraceContextReplaced: the bus sends each event under a trace context
	// of its own in the same trace (an instrumented bus's producer span),
	// so the suite checks that TraceParent keeps the trace ID rather than
	// comparing it, and ignores TraceState. The other metadata is compared.
	TraceContextReplaced bool
	// Timeout bounds every wait for delivery (default 15s).
	Timeout time.Duration
}

// Config is what the suite asks the factory for.
type Config struct {
	// Namespace is unique per test: every instance opened with it must
	// reach the same streams, exchanges or topics, and no other test's.
	Namespace string
	// Group is the consumer group ("" for the bus's default).
	Group string
	// Registry knows the suite's event types; the bus decodes with it.
	Registry *eventsource.Registry
	// MaxRetries is the retry budget RunDeadLetters chooses: the bus must
	// use it as its RetryPolicy.MaxRetries, with backoffs of a few
	// milliseconds so that retrying tests stay short. 0 means the bus's
	// default (Run always leaves it 0).
	MaxRetries int
}

// Factory opens a bus. The suite closes every bus it opens; the factory
// registers any broker cleanup (deleting streams, queues, topics) with
// t.Cleanup.
type Factory func(t *testing.T, cfg Config) bus.Bus

// Event types used by the suite. Their names avoid '.', '*' and '#' so that
// every transport can route them.
type (
	Ping  struct{ N int }
	Pong  struct{ N int }
	Other struct{ N int }
)

func (Ping) EventType() string  { return "BustestPing" }
func (Pong) EventType() string  { return "BustestPong" }
func (Other) EventType() string { return "BustestOther" }

// NewRegistry returns a registry with the suite's event types.
func NewRegistry() *eventsource.Registry {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[Ping](r)
	eventsource.MustRegister[Pong](r)
	eventsource.MustRegister[Other](r)
	return r
}

// NewEnvelope builds an envelope for aggregate "BustestAgg" aggID at version.
func NewEnvelope(aggID string, version int64, e eventsource.Event) eventsource.Envelope {
	env := eventsource.NewEnvelope(e)
	env.AggregateType = "BustestAgg"
	env.AggregateID = aggID
	env.Version = version
	return env
}

type suite struct {
	features Features
	factory  Factory
}

// Run runs the suite.
func Run(t *testing.T, features Features, factory Factory) {
	if features.Timeout <= 0 {
		features.Timeout = 15 * time.Second
	}
	s := &suite{features: features, factory: factory}
	tests := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"PublishDeliversOnce", s.testPublishDeliversOnce},
		{"TypedSubscription", s.testTypedSubscription},
		{"TwoHandlersEachOnce", s.testTwoHandlersEachOnce},
		{"UnsubscribeStopsDelivery", s.testUnsubscribe},
		{"WildcardGetsEveryType", s.testWildcard},
		{"FailingHandlerIsolated", s.testFailingHandlerIsolated},
		{"BackgroundPublishOnce", s.testBackgroundPublish},
		{"OrderPerAggregate", s.testOrderPerAggregate},
		{"OrderWithinBatches", s.testOrderWithinBatches},
		{"ProjectionGetsDeclaredTypes", s.testProjection},
		{"ConcurrentPublishers", s.testConcurrentPublishers},
		{"CloseWhilePublishing", s.testCloseWhilePublishing},
		{"StatsExact", s.testStats},
		{"InvalidSubscriptions", s.testInvalidSubscriptions},
		{"ConsumerGroups", s.testConsumerGroups},
		{"LateSubscriberCatchesUp", s.testLateSubscriber},
		{"CloseStopsGoroutines", s.testCloseStopsGoroutines},
		{"BacklogWaitsForStart", s.testBacklogWaitsForStart},
		{"SubscribeAfterStart", s.testSubscribeAfterStart},
		{"HandlerNamesUnique", s.testHandlerNamesUnique},
		{"StartIdempotentAndClosed", s.testStartIdempotent},
		{"HandlersSeeMetadata", s.testHandlersSeeMetadata},
		{"MiddlewareWrapsHandler", s.testMiddlewareWrapsHandler},
		{"TooLargeRefusedOthersDelivered", s.testTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

// open returns a bus in namespace ns and group; the suite closes it at the
// end of the test if the test has not.
func (s *suite) open(t *testing.T, ns, group string) bus.Bus {
	t.Helper()
	b := s.factory(t, Config{Namespace: ns, Group: group, Registry: NewRegistry()})
	closeAtCleanup(t, b, s.features.Timeout)
	return b
}

// start starts b's consumer, failing the test if it cannot.
func (s *suite) start(t *testing.T, b bus.Bus) {
	t.Helper()
	start(t, b, s.features.Timeout)
}

// Start starts b's consumer within 15 seconds, failing the test if it
// cannot: for tests that subscribe, then expect deliveries.
func Start(t testing.TB, b bus.Bus) {
	t.Helper()
	start(t, b, 15*time.Second)
}

func start(t testing.TB, b bus.Bus, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

func namespace(t *testing.T) string { return "bt" + uuid.NewString()[:8] }

// drain closes b, which finishes in-flight work, so counts are final.
func (s *suite) drain(t *testing.T, b bus.Bus) {
	t.Helper()
	drain(t, b, s.features.Timeout)
}

func (s *suite) ctx(t *testing.T) context.Context { return timeoutCtx(t, s.features.Timeout) }

// closeAtCleanup closes b at the end of the test, if the test has not.
func closeAtCleanup(t *testing.T, b bus.Bus, timeout time.Duration) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("Close at cleanup: %v", err)
		}
	})
}

// drain closes b, which finishes in-flight work, so counts are final.
func drain(t *testing.T, b bus.Bus, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// timeoutCtx returns a context that ends after timeout or with the test.
func timeoutCtx(t *testing.T, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// Recorder is a handler that records what it receives.
type Recorder struct {
	mu     sync.Mutex
	got    []eventsource.Envelope
	notify chan struct{}
	fail   func(eventsource.Envelope) error
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{notify: make(chan struct{}, 1)} }

// Handle records env.
func (r *Recorder) Handle(_ context.Context, env eventsource.Envelope) error {
	if r.fail != nil {
		if err := r.fail(env); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.got = append(r.got, env)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return nil
}

// Got returns a copy of what was recorded, in arrival order.
func (r *Recorder) Got() []eventsource.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// Len returns how many envelopes were recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// WaitFor waits until at least n envelopes were recorded or timeout passes.
func (r *Recorder) WaitFor(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for r.Len() < n {
		select {
		case <-r.notify:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %d events, got %d", timeout, n, r.Len())
		}
	}
}

// waitAll waits until every recorder reached its count, in total.
func waitTotal(t *testing.T, timeout time.Duration, n int, rs ...*Recorder) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		total := 0
		for _, r := range rs {
			total += r.Len()
		}
		if total >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %d events in total, got %d", timeout, n, total)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func ids(envs []eventsource.Envelope) []uuid.UUID {
	out := make([]uuid.UUID, len(envs))
	for i, e := range envs {
		out[i] = e.ID
	}
	return out
}

// assertSameSet fails unless got holds every ID in want exactly once.
func assertSameSet(t *testing.T, what string, got []eventsource.Envelope, want []eventsource.Envelope) {
	t.Helper()
	seen := make(map[uuid.UUID]int, len(got))
	for _, e := range got {
		seen[e.ID]++
	}
	for _, w := range want {
		switch n := seen[w.ID]; n {
		case 1:
		case 0:
			t.Errorf("%s: event %s (%s v%d) never arrived", what, w.ID, w.AggregateID, w.Version)
		default:
			t.Errorf("%s: event %s arrived %d times", what, w.ID, n)
		}
		delete(seen, w.ID)
	}
	for id, n := range seen {
		t.Errorf("%s: unexpected event %s arrived %d times", what, id, n)
	}
}

func (s *suite) testPublishDeliversOnce(t *testing.T) {
	b := s.open(t, namespace(t), "")
	rec := NewRecorder()
	if _, err := b.Subscribe(Ping{}.EventType(), rec); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	env := NewEnvelope("a1", 1, Ping{N: 42})
	env.Metadata = eventsource.Metadata{CorrelationID: "corr-1", CausationID: "cause-1", TenantID: "t1",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	if err := b.Publish(s.ctx(t), env); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if s.features.Synchronous && rec.Len() != 1 {
		t.Fatalf("synchronous bus: %d deliveries when Publish returned, want 1", rec.Len())
	}
	rec.WaitFor(t, 1, s.features.Timeout)
	s.drain(t, b)
	got := rec.Got()
	if len(got) != 1 {
		t.Fatalf("delivered %d times, want once", len(got))
	}
	g := got[0]
	if g.ID != env.ID || g.Type != env.Type || g.AggregateType != env.AggregateType ||
		g.AggregateID != env.AggregateID || g.Version != env.Version || !g.OccurredAt.Equal(env.OccurredAt) {
		t.Errorf("envelope changed in transit:\n got %+v\nwant %+v", g, env)
	}
	if g.Metadata.CorrelationID != "corr-1" || g.Metadata.CausationID != "cause-1" ||
		g.Metadata.TenantID != "t1" || !s.sameTrace(g.Metadata.TraceParent, env.Metadata.TraceParent) {
		t.Errorf("metadata changed in transit: got %+v, want %+v", g.Metadata, env.Metadata)
	}
	if p, ok := g.Event.(Ping); !ok || p.N != 42 {
		t.Errorf("payload = %#v, want Ping{N: 42}", g.Event)
	}
}

// sameTrace reports whether a delivered traceparent is the published
// one, or, on a bus that replaces it, one of the same trace.
func (s *suite) sameTrace(got, published string) bool {
	if !s.features.TraceContextReplaced {
		return got == published
	}
	// version "-" trace ID "-" parent ID "-" flags
	const traceIDEnd = len("00-") + 32
	return len(got) == len(published) && len(got) > traceIDEnd && got[:traceIDEnd] == published[:traceIDEnd]
}

func (s *suite) testTypedSubscription(t *testing.T) {
	b := s.open(t, namespace(t), "")
	var mu sync.Mutex
	var got []int
	done := make(chan struct{}, 16)
	if _, err := bus.On(b, func(_ context.Context, p Ping, env eventsource.Envelope) error {
		mu.Lock()
		got = append(got, p.N)
		mu.Unlock()
		done <- struct{}{}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A Pong subscriber too: a bus may refuse events no one is subscribed
	// to (RabbitMQ's mandatory publishing), and this test is about typing.
	pongs := NewRecorder()
	if _, err := b.Subscribe(Pong{}.EventType(), pongs); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	if err := b.Publish(s.ctx(t), NewEnvelope("a1", 1, Ping{N: 7}), NewEnvelope("a1", 2, Pong{N: 8})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(s.features.Timeout):
		t.Fatal("typed handler never called")
	}
	pongs.WaitFor(t, 1, s.features.Timeout)
	s.drain(t, b)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, []int{7}) {
		t.Errorf("typed handler got %v, want [7]", got)
	}
}

func (s *suite) testTwoHandlersEachOnce(t *testing.T) {
	b := s.open(t, namespace(t), "")
	r1, r2 := NewRecorder(), NewRecorder()
	for i, r := range []*Recorder{r1, r2} {
		if _, err := b.Subscribe(Ping{}.EventType(), r, bus.WithName(fmt.Sprint("h", i))); err != nil {
			t.Fatal(err)
		}
	}
	s.start(t, b)
	env := NewEnvelope("a1", 1, Ping{N: 1})
	if err := b.Publish(s.ctx(t), env); err != nil {
		t.Fatal(err)
	}
	r1.WaitFor(t, 1, s.features.Timeout)
	r2.WaitFor(t, 1, s.features.Timeout)
	s.drain(t, b)
	want := []eventsource.Envelope{env}
	assertSameSet(t, "first handler", r1.Got(), want)
	assertSameSet(t, "second handler", r2.Got(), want)
}

func (s *suite) testUnsubscribe(t *testing.T) {
	b := s.open(t, namespace(t), "")
	gone, stays := NewRecorder(), NewRecorder()
	sub, err := b.Subscribe(Ping{}.EventType(), gone, bus.WithName("gone"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(Ping{}.EventType(), stays, bus.WithName("stays")); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	first := NewEnvelope("a1", 1, Ping{N: 1})
	if err := b.Publish(s.ctx(t), first); err != nil {
		t.Fatal(err)
	}
	gone.WaitFor(t, 1, s.features.Timeout)
	stays.WaitFor(t, 1, s.features.Timeout)
	if err := sub.Unsubscribe(); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatalf("second Unsubscribe: %v", err)
	}
	second := NewEnvelope("a1", 2, Ping{N: 2})
	if err := b.Publish(s.ctx(t), second); err != nil {
		t.Fatal(err)
	}
	stays.WaitFor(t, 2, s.features.Timeout)
	s.drain(t, b)
	assertSameSet(t, "unsubscribed handler", gone.Got(), []eventsource.Envelope{first})
	assertSameSet(t, "remaining handler", stays.Got(), []eventsource.Envelope{first, second})
}

func (s *suite) testWildcard(t *testing.T) {
	b := s.open(t, namespace(t), "")
	rec := NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	want := []eventsource.Envelope{
		NewEnvelope("a1", 1, Ping{N: 1}),
		NewEnvelope("a1", 2, Pong{N: 2}),
		NewEnvelope("a1", 3, Other{N: 3}),
	}
	if err := b.Publish(s.ctx(t), want...); err != nil {
		t.Fatal(err)
	}
	rec.WaitFor(t, len(want), s.features.Timeout)
	s.drain(t, b)
	got := rec.Got()
	assertSameSet(t, "wildcard", got, want)
	if s.features.OrderingPerAggregate && !slices.Equal(ids(got), ids(want)) {
		t.Errorf("wildcard order = %v, want %v", ids(got), ids(want))
	}
}

func (s *suite) testFailingHandlerIsolated(t *testing.T) {
	b := s.open(t, namespace(t), "")
	ok := NewRecorder()
	failing := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return errors.New("boom") })
	panicking := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { panic("kaboom") })
	for i, h := range []bus.Handler{failing, panicking, ok} {
		if _, err := b.Subscribe(Ping{}.EventType(), h, bus.WithName(fmt.Sprint("h", i))); err != nil {
			t.Fatal(err)
		}
	}
	s.start(t, b)
	want := []eventsource.Envelope{NewEnvelope("a1", 1, Ping{N: 1}), NewEnvelope("a2", 1, Ping{N: 2}), NewEnvelope("a3", 1, Ping{N: 3})}
	if err := b.Publish(s.ctx(t), want...); err != nil {
		t.Fatalf("Publish failed because of a handler: %v", err)
	}
	ok.WaitFor(t, len(want), s.features.Timeout)
	s.drain(t, b)
	assertSameSet(t, "healthy sibling", ok.Got(), want)
	st := b.Stats()
	if st.HandlerErrors < uint64(2*len(want)) || st.HandlerPanics < uint64(len(want)) {
		t.Errorf("stats count %d handler errors and %d panics, want at least %d and %d",
			st.HandlerErrors, st.HandlerPanics, 2*len(want), len(want))
	}
	if s.features.Synchronous && (st.HandlerErrors != uint64(2*len(want)) || st.HandlerPanics != uint64(len(want))) {
		t.Errorf("stats count %d handler errors and %d panics, want exactly %d and %d",
			st.HandlerErrors, st.HandlerPanics, 2*len(want), len(want))
	}
}

func (s *suite) testBackgroundPublish(t *testing.T) {
	b := s.open(t, namespace(t), "")
	bg, ok := b.(bus.BackgroundPublisher)
	if !ok {
		t.Skipf("%T does not implement bus.BackgroundPublisher", b)
	}
	rec := NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	var want []eventsource.Envelope
	for i := range 200 {
		want = append(want, NewEnvelope(fmt.Sprintf("a%d", i%7), int64(i/7+1), Ping{N: i}))
	}
	for _, env := range want {
		if err := bg.PublishAsync(s.ctx(t), env); err != nil {
			t.Fatal(err)
		}
	}
	s.drain(t, b) // Close drains the background queue
	assertSameSet(t, "background publish", rec.Got(), want)
	if err := bg.PublishAsync(s.ctx(t), want[0]); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("PublishAsync after Close = %v, want ErrClosed", err)
	}
	if st := b.Stats(); st.BackgroundTasks != 0 {
		t.Errorf("%d background tasks left after Close", st.BackgroundTasks)
	}
}

func (s *suite) testOrderPerAggregate(t *testing.T) {
	if !s.features.OrderingPerAggregate {
		t.Skip("bus does not declare ordering per aggregate")
	}
	b := s.open(t, namespace(t), "")
	rec := NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	const aggregates, perAggregate = 8, 60
	var all []eventsource.Envelope
	for v := 1; v <= perAggregate; v++ {
		for a := range aggregates {
			all = append(all, NewEnvelope(fmt.Sprintf("agg-%d", a), int64(v), Ping{N: v}))
		}
	}
	s.start(t, b)
	// Publish in small batches so a bus that pipelines batches is covered too.
	for chunk := range slices.Chunk(all, 5) {
		if err := b.Publish(s.ctx(t), chunk...); err != nil {
			t.Fatal(err)
		}
	}
	rec.WaitFor(t, len(all), s.features.Timeout)
	s.drain(t, b)
	got := rec.Got()
	assertSameSet(t, "ordering", got, all)
	assertVersionsInOrder(t, got)
}

type testProjection struct {
	*Recorder
	types []string
}

func (p testProjection) EventTypes() []string { return p.types }

func (s *suite) testProjection(t *testing.T) {
	b := s.open(t, namespace(t), "")
	p := testProjection{Recorder: NewRecorder(), types: []string{Ping{}.EventType(), Pong{}.EventType()}}
	all := NewRecorder()
	sub, err := bus.SubscribeProjection(b, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.SubscribeAll(all); err != nil {
		t.Fatal(err)
	}
	var published, declared []eventsource.Envelope
	for i := range 9 {
		var e eventsource.Event
		switch i % 3 {
		case 0:
			e = Ping{N: i}
		case 1:
			e = Pong{N: i}
		default:
			e = Other{N: i}
		}
		env := NewEnvelope("p1", int64(i+1), e)
		published = append(published, env)
		if i%3 != 2 {
			declared = append(declared, env)
		}
	}
	s.start(t, b)
	if err := b.Publish(s.ctx(t), published...); err != nil {
		t.Fatal(err)
	}
	all.WaitFor(t, len(published), s.features.Timeout)
	p.WaitFor(t, len(declared), s.features.Timeout)
	if n := b.Stats().Subscribers[Ping{}.EventType()]; n != 1 {
		t.Errorf("Ping subscribers = %d, want 1 (the projection)", n)
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	st := b.Stats()
	if st.Subscribers[Ping{}.EventType()] != 0 || st.Subscribers[Pong{}.EventType()] != 0 {
		t.Errorf("after Unsubscribe the projection is still counted: %v", st.Subscribers)
	}
	s.drain(t, b)
	assertSameSet(t, "projection", p.Got(), declared)
	if s.features.OrderingPerAggregate && !slices.Equal(ids(p.Got()), ids(declared)) {
		t.Errorf("projection order = %v, want %v", ids(p.Got()), ids(declared))
	}
}

func (s *suite) testConcurrentPublishers(t *testing.T) {
	b := s.open(t, namespace(t), "")
	rec := NewRecorder()
	if _, err := b.Subscribe(Ping{}.EventType(), rec); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	const publishers, each = 16, 100
	want := make([][]eventsource.Envelope, publishers)
	for p := range publishers {
		for i := range each {
			want[p] = append(want[p], NewEnvelope(fmt.Sprintf("pub-%d", p), int64(i+1), Ping{N: i}))
		}
	}
	s.publishConcurrently(t, b, want, 1)
	rec.WaitFor(t, publishers*each, s.features.Timeout)
	s.drain(t, b)
	assertSameSet(t, "concurrent publishers", rec.Got(), slices.Concat(want...))
	if st := b.Stats(); st.Published != publishers*each {
		t.Errorf("Stats.Published = %d, want %d", st.Published, publishers*each)
	}
}

func (s *suite) testCloseWhilePublishing(t *testing.T) {
	b := s.open(t, namespace(t), "")
	rec := NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	started := make(chan struct{})
	var startOnce sync.Once
	for p := range 4 {
		wg.Go(func() {
			for i := 1; ; i++ {
				err := b.Publish(context.Background(), NewEnvelope(fmt.Sprintf("c%d", p), int64(i), Ping{N: i}))
				if errors.Is(err, bus.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Publish while closing: %v", err)
					return
				}
				mu.Lock()
				accepted++
				mu.Unlock()
				startOnce.Do(func() { close(started) })
			}
		})
	}
	<-started
	closeErrs := make(chan error, 2)
	for range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.features.Timeout)
			defer cancel()
			closeErrs <- b.Close(ctx)
		}()
	}
	for range 2 {
		if err := <-closeErrs; err != nil {
			t.Errorf("concurrent Close: %v", err)
		}
	}
	wg.Wait()
	if err := b.Close(s.ctx(t)); err != nil {
		t.Errorf("Close after Close: %v", err)
	}
	if err := b.Publish(s.ctx(t), NewEnvelope("c", 1, Ping{})); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(Ping{}.EventType(), rec); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
	}
	if s.features.Synchronous && rec.Len() != accepted {
		t.Errorf("%d publishes succeeded but handlers saw %d events", accepted, rec.Len())
	}
}

func (s *suite) testStats(t *testing.T) {
	b := s.open(t, namespace(t), "")
	h1, h2, wild, pong := NewRecorder(), NewRecorder(), NewRecorder(), NewRecorder()
	for i, r := range []*Recorder{h1, h2} {
		if _, err := b.Subscribe(Ping{}.EventType(), r, bus.WithName(fmt.Sprint("h", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Subscribe(Pong{}.EventType(), pong); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SubscribeAll(wild); err != nil {
		t.Fatal(err)
	}
	st := b.Stats()
	if st.Subscribers[Ping{}.EventType()] != 2 || st.Subscribers[Pong{}.EventType()] != 1 ||
		len(st.Subscribers) != 2 || st.WildcardSubscribers != 1 {
		t.Errorf("subscribers = %v, wildcard %d; want Ping 2, Pong 1, wildcard 1",
			st.Subscribers, st.WildcardSubscribers)
	}
	events := []eventsource.Envelope{
		NewEnvelope("s1", 1, Ping{N: 1}), NewEnvelope("s1", 2, Ping{N: 2}), NewEnvelope("s1", 3, Ping{N: 3}),
		NewEnvelope("s1", 4, Pong{N: 4}), NewEnvelope("s1", 5, Pong{N: 5}), NewEnvelope("s1", 6, Other{N: 6}),
	}
	s.start(t, b)
	if err := b.Publish(s.ctx(t), events...); err != nil {
		t.Fatal(err)
	}
	wild.WaitFor(t, len(events), s.features.Timeout)
	waitTotal(t, s.features.Timeout, 3+3+2, h1, h2, pong)
	s.drain(t, b)
	st = b.Stats()
	const invoked = 3*3 + 2*2 + 1 // Ping: two handlers and the wildcard; Pong: one and the wildcard; Other: the wildcard
	if st.Published != uint64(len(events)) || st.HandlersInvoked != invoked || st.HandlerErrors != 0 || st.InFlight != 0 {
		t.Errorf("stats = published %d, invoked %d, errors %d, in flight %d; want %d, %d, 0, 0",
			st.Published, st.HandlersInvoked, st.HandlerErrors, st.InFlight, len(events), invoked)
	}
}

func (s *suite) testInvalidSubscriptions(t *testing.T) {
	b := s.open(t, namespace(t), "")
	if _, err := b.Subscribe("", NewRecorder()); !errors.Is(err, bus.ErrInvalidSubscription) {
		t.Errorf("Subscribe with an empty type = %v, want ErrInvalidSubscription", err)
	}
	if _, err := b.Subscribe(Ping{}.EventType(), nil); !errors.Is(err, bus.ErrInvalidSubscription) {
		t.Errorf("Subscribe with a nil handler = %v, want ErrInvalidSubscription", err)
	}
	if err := b.Publish(s.ctx(t), eventsource.Envelope{}); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("Publish of an empty envelope = %v, want ErrInvalidEvent", err)
	}
}

func (s *suite) testConsumerGroups(t *testing.T) {
	if !s.features.ConsumerGroups {
		t.Skip("bus does not declare consumer groups")
	}
	ns := namespace(t)
	a1, a2, b1 := s.open(t, ns, "group-a"), s.open(t, ns, "group-a"), s.open(t, ns, "group-b")
	ra1, ra2, rb1 := NewRecorder(), NewRecorder(), NewRecorder()
	for _, x := range []struct {
		b bus.Bus
		r *Recorder
	}{{a1, ra1}, {a2, ra2}, {b1, rb1}} {
		if _, err := x.b.Subscribe(Ping{}.EventType(), x.r); err != nil {
			t.Fatal(err)
		}
		s.start(t, x.b)
	}
	var want []eventsource.Envelope
	for i := range 300 {
		want = append(want, NewEnvelope(fmt.Sprintf("g%d", i%10), int64(i/10+1), Ping{N: i}))
	}
	if err := a1.Publish(s.ctx(t), want...); err != nil {
		t.Fatal(err)
	}
	waitTotal(t, s.features.Timeout, len(want), ra1, ra2)
	rb1.WaitFor(t, len(want), s.features.Timeout)
	for _, b := range []bus.Bus{a1, a2, b1} {
		s.drain(t, b)
	}
	assertSameSet(t, "group a (two members)", slices.Concat(ra1.Got(), ra2.Got()), want)
	assertSameSet(t, "group b", rb1.Got(), want)
}

func (s *suite) testLateSubscriber(t *testing.T) {
	if !s.features.Persistence {
		t.Skip("bus does not declare persistence")
	}
	ns := namespace(t)
	pub := s.open(t, ns, "publisher")
	var want []eventsource.Envelope
	for i := range 10 {
		want = append(want, NewEnvelope("late", int64(i+1), Ping{N: i}))
	}
	if err := pub.Publish(s.ctx(t), want...); err != nil {
		t.Fatal(err)
	}
	late := s.open(t, ns, "late-group")
	rec := NewRecorder()
	if _, err := late.Subscribe(Ping{}.EventType(), rec); err != nil {
		t.Fatal(err)
	}
	s.start(t, late)
	rec.WaitFor(t, len(want), s.features.Timeout)
	s.drain(t, late)
	assertSameSet(t, "late subscriber", rec.Got(), want)
}

// testCloseStopsGoroutines checks that no goroutine the bus started outlives
// Close: the count returns to what it was before the bus was opened.
func (s *suite) testCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	b := s.open(t, namespace(t), "")
	rec := NewRecorder()
	if _, err := b.SubscribeAll(rec, bus.Async(8, bus.Block)); errors.Is(err, bus.ErrInvalidSubscription) {
		// Only the in-process bus has asynchronous subscriptions.
		if _, err := b.SubscribeAll(rec); err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	if bg, ok := b.(bus.BackgroundPublisher); ok {
		if err := bg.PublishAsync(s.ctx(t), NewEnvelope("g1", 1, Ping{N: 1})); err != nil {
			t.Fatal(err)
		}
	} else if err := b.Publish(s.ctx(t), NewEnvelope("g1", 1, Ping{N: 1})); err != nil {
		t.Fatal(err)
	}
	rec.WaitFor(t, 1, s.features.Timeout)
	s.drain(t, b)
	deadline := time.Now().Add(s.features.Timeout)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before the bus was opened:\n%s",
				runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// CheckLag checks a broker bus's bus.LagReporter. open returns a new,
// unstarted instance of one consumer group each time; CheckLag closes
// them. A first instance subscribes and starts, so that the group and its
// destinations exist, and closes; 5 events published then are lag of kind
// want for a second instance, before it starts, and once it has handled
// them no kind reports any lag.
func CheckLag(t *testing.T, open func(t *testing.T) bus.Bus, want bus.LagKind) {
	t.Helper()
	first := open(t)
	if _, err := first.Subscribe(Ping{}.EventType(), NewRecorder(), bus.WithName("lag")); err != nil {
		t.Fatal(err)
	}
	start(t, first, 15*time.Second)
	drain(t, first, 15*time.Second)

	b := open(t)
	closeAtCleanup(t, b, 15*time.Second)
	lr, ok := b.(bus.LagReporter)
	if !ok {
		t.Fatalf("%T does not implement bus.LagReporter", b)
	}
	rec := NewRecorder()
	if _, err := b.Subscribe(Ping{}.EventType(), rec, bus.WithName("lag")); err != nil {
		t.Fatal(err)
	}
	ctx := timeoutCtx(t, 15*time.Second)
	events := make([]eventsource.Envelope, 5)
	for i := range events {
		events[i] = NewEnvelope("lag-agg", int64(i+1), Ping{N: i})
	}
	if err := b.Publish(ctx, events...); err != nil {
		t.Fatal(err)
	}
	lags := func() map[bus.LagKind]int64 {
		t.Helper()
		got, err := lr.Lag(ctx)
		if err != nil {
			t.Fatalf("Lag: %v", err)
		}
		out := map[bus.LagKind]int64{}
		for _, l := range got {
			out[l.Kind] += l.Messages
		}
		return out
	}
	waitCond(t, 15*time.Second, func() bool { return lags()[want] == int64(len(events)) },
		func() string { return fmt.Sprintf("lag %v before Start, want %s = %d", lags(), want, len(events)) })
	start(t, b, 15*time.Second)
	rec.WaitFor(t, len(events), 15*time.Second)
	waitCond(t, 15*time.Second, func() bool {
		for _, n := range lags() {
			if n != 0 {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("lag %v once every event was handled, want none", lags()) })
}

// waitCond polls cond until it holds, failing t with what() after timeout.
func waitCond(t *testing.T, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, what())
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}
