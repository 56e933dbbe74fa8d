package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

type Ping struct{ N int }
type Pong struct{ N int }

func (Ping) EventType() string { return "Ping" }
func (Pong) EventType() string { return "Pong" }

func registry() *eventsource.Registry {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[Ping](r)
	eventsource.MustRegister[Pong](r)
	return r
}

// fakeSettler records what the dispatcher settles.
type fakeSettler struct {
	mu       sync.Mutex
	acked    []Message
	dead     []DeadLetter
	released []Message
	failAcks atomic.Int32 // fail this many Ack calls first
	failDead atomic.Bool  // fail every DeadLetter call
	changed  chan struct{}
}

func newSettler() *fakeSettler { return &fakeSettler{changed: make(chan struct{}, 1)} }

func (f *fakeSettler) poke() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *fakeSettler) Ack(_ context.Context, msgs []Message) error {
	if f.failAcks.Add(-1) >= 0 {
		return errors.New("broker down")
	}
	f.mu.Lock()
	f.acked = append(f.acked, msgs...)
	f.mu.Unlock()
	f.poke()
	return nil
}

func (f *fakeSettler) DeadLetter(_ context.Context, msg Message, rec DeadLetter) error {
	if f.failDead.Load() {
		f.poke()
		return errors.New("broker down")
	}
	f.mu.Lock()
	f.dead = append(f.dead, rec)
	f.mu.Unlock()
	f.poke()
	return nil
}

func (f *fakeSettler) Release(_ context.Context, msgs []Message) {
	f.mu.Lock()
	f.released = append(f.released, msgs...)
	f.mu.Unlock()
	f.poke()
}

func (f *fakeSettler) snapshot() (acked []Message, dead []DeadLetter, released []Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.acked), slices.Clone(f.dead), slices.Clone(f.released)
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func newDispatcher(t *testing.T, cfg Config) (*Dispatcher, *fakeSettler) {
	t.Helper()
	s := newSettler()
	cfg.Registry = registry()
	cfg.Settler = s
	if cfg.Retry == (RetryPolicy{}) {
		cfg.Retry = RetryPolicy{MaxRetries: 3, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Multiplier: 2}
	}
	cfg.Group = "g"
	cfg.Logger = slog.New(slog.DiscardHandler)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d, s
}

func envelope(agg string, version int64, e eventsource.Event) eventsource.Envelope {
	env := eventsource.NewEnvelope(e)
	env.AggregateType = "Agg"
	env.AggregateID = agg
	env.Version = version
	return env
}

var msgSeq atomic.Uint64

func message(t *testing.T, env eventsource.Envelope) Message {
	t.Helper()
	b, err := eventsource.NewJSONCodec(nil).Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return Message{Source: "s", ID: fmt.Sprint(msgSeq.Add(1)), Key: env.AggregateID, Type: env.Type, Body: b, Attempt: 1}
}

// recorder records handled envelopes, optionally failing first.
type recorder struct {
	mu   sync.Mutex
	got  []eventsource.Envelope
	fail func(eventsource.Envelope) error
}

func (r *recorder) Handle(_ context.Context, env eventsource.Envelope) error {
	if r.fail != nil {
		if err := r.fail(env); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.got = append(r.got, env)
	r.mu.Unlock()
	return nil
}

func (r *recorder) versions(agg string) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, e := range r.got {
		if e.AggregateID == agg {
			out = append(out, e.Version)
		}
	}
	return out
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func dispatch(t *testing.T, d *Dispatcher, msgs ...Message) {
	t.Helper()
	for _, m := range msgs {
		if err := d.Dispatch(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

func drain(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRouting(t *testing.T) {
	d, s := newDispatcher(t, Config{})
	pings, multi, all := &recorder{}, &recorder{}, &recorder{}
	if _, err := d.Subscribe("Ping", pings); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SubscribeTypes([]string{"Pong", "Ping", "Pong"}, multi); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SubscribeAll(all); err != nil {
		t.Fatal(err)
	}
	var _ bus.MultiTypeSubscriber = d
	dispatch(t, d, message(t, envelope("a", 1, Ping{1})), message(t, envelope("a", 2, Pong{2})))
	waitUntil(t, "both acked", func() bool { a, _, _ := s.snapshot(); return len(a) == 2 })
	drain(t, d)
	if pings.len() != 1 || multi.len() != 2 || all.len() != 2 {
		t.Errorf("ping %d, multi %d, all %d; want 1, 2, 2", pings.len(), multi.len(), all.len())
	}
	if got := multi.versions("a"); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("multi-type handler order %v", got)
	}
	st := d.Stats()
	if st.Subscribers["Ping"] != 2 || st.Subscribers["Pong"] != 1 || st.WildcardSubscribers != 1 {
		t.Errorf("subscribers %v wildcard %d", st.Subscribers, st.WildcardSubscribers)
	}
	if st.Received != 2 || st.Handled != 2 || st.HandlersInvoked != 5 || st.Delivered != 5 || st.InFlight != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestInvalidSubscriptions(t *testing.T) {
	d, _ := newDispatcher(t, Config{})
	for name, err := range map[string]error{
		"empty type": func() error { _, err := d.Subscribe("", &recorder{}); return err }(),
		"nil":        func() error { _, err := d.SubscribeAll(nil); return err }(),
		"no types":   func() error { _, err := d.SubscribeTypes(nil, &recorder{}); return err }(),
		"async":      func() error { _, err := d.SubscribeAll(&recorder{}, bus.Async(1, bus.Block)); return err }(),
	} {
		if !errors.Is(err, bus.ErrInvalidSubscription) {
			t.Errorf("%s: %v, want ErrInvalidSubscription", name, err)
		}
	}
	drain(t, d)
	if _, err := d.SubscribeAll(&recorder{}); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	if err := d.Dispatch(context.Background(), Message{}); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Dispatch after Close: %v", err)
	}
}

// A failing handler is retried alone: its healthy sibling runs once.
func TestRetriesOnlyFailedHandlers(t *testing.T) {
	d, s := newDispatcher(t, Config{})
	var calls atomic.Int32
	flaky := &recorder{fail: func(eventsource.Envelope) error {
		if calls.Add(1) < 3 {
			return errors.New("transient")
		}
		return nil
	}}
	healthy := &recorder{}
	var panics atomic.Int32
	panicky := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		if panics.Add(1) == 1 {
			panic("once")
		}
		return nil
	})
	for i, h := range []bus.Handler{flaky, healthy, panicky} {
		if _, err := d.Subscribe("Ping", h, bus.WithName(fmt.Sprint("h", i))); err != nil {
			t.Fatal(err)
		}
	}
	dispatch(t, d, message(t, envelope("a", 1, Ping{1})))
	waitUntil(t, "ack", func() bool { a, _, _ := s.snapshot(); return len(a) == 1 })
	drain(t, d)
	if healthy.len() != 1 || flaky.len() != 1 || calls.Load() != 3 || panics.Load() != 2 {
		t.Errorf("healthy %d, flaky recorded %d after %d calls, panicky called %d; want 1, 1, 3, 2",
			healthy.len(), flaky.len(), calls.Load(), panics.Load())
	}
	st := d.Stats()
	if st.Retries != 2 || st.HandlerErrors != 3 || st.HandlerPanics != 1 || st.HandlersInvoked != 6 || st.Delivered != 3 {
		t.Errorf("stats: retries %d errors %d panics %d invoked %d delivered %d; want 2 3 1 6 3",
			st.Retries, st.HandlerErrors, st.HandlerPanics, st.HandlersInvoked, st.Delivered)
	}
}

// While an event waits for its retry, later events of its aggregate are
// held back and other aggregates, on the same worker, keep flowing.
func TestRetryHoldsAggregateNotOthers(t *testing.T) {
	d, s := newDispatcher(t, Config{Workers: 1, Retry: RetryPolicy{MaxRetries: 1 << 20, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Multiplier: 2}})
	var healed atomic.Bool
	var failures atomic.Int32
	rec := &recorder{fail: func(env eventsource.Envelope) error {
		if env.AggregateID == "a" && env.Version == 1 && !healed.Load() {
			failures.Add(1)
			return errors.New("not yet")
		}
		return nil
	}}
	if _, err := d.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	dispatch(t, d, message(t, envelope("a", 1, Ping{})), message(t, envelope("a", 2, Ping{})), message(t, envelope("a", 3, Ping{})))
	waitUntil(t, "a retrying", func() bool { return failures.Load() >= 3 })
	dispatch(t, d, message(t, envelope("b", 1, Ping{})), message(t, envelope("b", 2, Ping{})))
	waitUntil(t, "b handled while a waits", func() bool { return len(rec.versions("b")) == 2 })
	if got := rec.versions("a"); len(got) != 0 {
		t.Fatalf("aggregate a handled %v while its first event waits for a retry", got)
	}
	dispatch(t, d, message(t, envelope("a", 4, Ping{})))
	healed.Store(true)
	waitUntil(t, "all acked", func() bool { a, _, _ := s.snapshot(); return len(a) == 6 })
	drain(t, d)
	if got := rec.versions("a"); !slices.Equal(got, []int64{1, 2, 3, 4}) {
		t.Errorf("aggregate a order %v, want [1 2 3 4]", got)
	}
}

func TestOrderPerAggregateUnderConcurrency(t *testing.T) {
	d, s := newDispatcher(t, Config{Workers: 8, MaxInFlight: 64})
	var running, peak atomic.Int32
	rec := &recorder{fail: func(eventsource.Envelope) error {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(50 * time.Microsecond) // let handlers overlap
		running.Add(-1)
		return nil
	}}
	if _, err := d.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	const aggs, each = 32, 50
	for v := 1; v <= each; v++ {
		for a := range aggs {
			dispatch(t, d, message(t, envelope(fmt.Sprint("agg", a), int64(v), Ping{v})))
		}
	}
	waitUntil(t, "all acked", func() bool { a, _, _ := s.snapshot(); return len(a) == aggs*each })
	drain(t, d)
	for a := range aggs {
		got := rec.versions(fmt.Sprint("agg", a))
		for i, v := range got {
			if v != int64(i+1) {
				t.Fatalf("agg%d order %v", a, got)
			}
		}
	}
	if peak.Load() < 2 {
		t.Errorf("handlers never overlapped (peak %d): aggregates should run concurrently", peak.Load())
	}
}

func TestMaxRetriesDeadLetters(t *testing.T) {
	d, s := newDispatcher(t, Config{})
	var calls atomic.Int32
	failing := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		calls.Add(1)
		return errors.New("always")
	})
	healthy := &recorder{}
	if _, err := d.Subscribe("Ping", failing, bus.WithName("failing")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Subscribe("Ping", healthy); err != nil {
		t.Fatal(err)
	}
	env := envelope("a", 7, Ping{1})
	msg := message(t, env)
	next := envelope("a", 8, Ping{2})
	dispatch(t, d, msg, message(t, next))
	waitUntil(t, "both dead-lettered", func() bool { _, dl, _ := s.snapshot(); return len(dl) == 2 })
	drain(t, d)
	acked, dead, _ := s.snapshot()
	rec := dead[0]
	if rec.SourceID != msg.ID {
		rec = dead[1]
	}
	if rec.Reason != ReasonMaxRetries || rec.Attempts != 3 || rec.Group != "g" || !strings.Contains(rec.Error, "always") ||
		!slices.Equal(rec.Handlers, []string{"failing"}) || rec.EventID != env.ID.String() || rec.AggregateID != "a" ||
		rec.Version != 7 || rec.EventType != "Ping" || string(rec.Body) != string(msg.Body) || rec.SourceID != msg.ID || rec.Time.IsZero() {
		t.Errorf("dead letter %+v", rec)
	}
	if calls.Load() != 6 || healthy.len() != 2 {
		t.Errorf("failing called %d times, healthy %d; want 6 (3 per event), 2", calls.Load(), healthy.len())
	}
	if len(acked) != 0 {
		t.Errorf("acked %d", len(acked))
	}
	if st := d.Stats(); st.DeadLettered != 2 || st.Retries != 4 || st.Handled != 0 {
		t.Errorf("stats dead %d retries %d handled %d", st.DeadLettered, st.Retries, st.Handled)
	}
}

func TestBadInputDeadLettered(t *testing.T) {
	d, s := newDispatcher(t, Config{})
	rec := &recorder{}
	if _, err := d.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	unknown := []byte(`{"id":"0190a5b2-7c3e-7000-8000-000000000001","type":"Nope","aggregate_id":"x","data":{}}`)
	good := envelope("a", 1, Ping{1})
	dispatch(t, d,
		Message{ID: "1", Body: []byte("not json"), Attempt: 1},
		Message{ID: "2", Key: "x", Body: unknown, Attempt: 1},
		Message{ID: "3", Body: []byte(`{"id":"x","type":"Ping","data":{}}`), Attempt: 1},
		message(t, good))
	waitUntil(t, "settled", func() bool { a, dl, _ := s.snapshot(); return len(dl) == 3 && len(a) == 1 })
	drain(t, d)
	_, dead, _ := s.snapshot()
	reasons := map[string]Reason{}
	for _, r := range dead {
		reasons[r.SourceID] = r.Reason
	}
	if reasons["1"] != ReasonMalformed || reasons["2"] != ReasonUnknownType || reasons["3"] != ReasonMalformed {
		t.Errorf("reasons %v", reasons)
	}
	for _, r := range dead {
		if r.SourceID == "2" && r.EventType != "Nope" {
			t.Errorf("unknown type record names type %q", r.EventType)
		}
	}
	if rec.len() != 1 {
		t.Errorf("good event handled %d times", rec.len())
	}
}

func TestRedeliveredTooOftenDeadLettered(t *testing.T) {
	d, s := newDispatcher(t, Config{})
	rec := &recorder{}
	if _, err := d.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	m := message(t, envelope("a", 1, Ping{}))
	m.Attempt = 4 // three earlier deliveries: the budget of 3 is spent
	dispatch(t, d, m)
	waitUntil(t, "dead letter", func() bool { _, dl, _ := s.snapshot(); return len(dl) == 1 })
	drain(t, d)
	_, dead, _ := s.snapshot()
	if dead[0].Reason != ReasonMaxRetries || dead[0].Attempts != 3 || rec.len() != 0 {
		t.Errorf("record %+v, handled %d", dead[0], rec.len())
	}
}

// A retry redelivered too often (the broker's count grew while the
// process crashed before its ack) is dead-lettered naming the handlers it
// still owed, not none: a replay of an empty list would run the handlers
// that had succeeded too.
func TestRedeliveredRetryKeepsItsHandlers(t *testing.T) {
	d, s := newDispatcher(t, Config{})
	ok, failed := &recorder{}, &recorder{}
	if _, err := d.Subscribe("Ping", ok, bus.WithName("ok")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Subscribe("Ping", failed, bus.WithName("failed")); err != nil {
		t.Fatal(err)
	}
	m := message(t, envelope("a", 1, Ping{}))
	m.Attempt, m.Handlers = 4, []string{"failed"}
	dispatch(t, d, m)
	waitUntil(t, "dead letter", func() bool { _, dl, _ := s.snapshot(); return len(dl) == 1 })
	drain(t, d)
	_, dead, _ := s.snapshot()
	if r := dead[0]; r.Reason != ReasonMaxRetries || !slices.Equal(r.Handlers, []string{"failed"}) || ok.len()+failed.len() != 0 {
		t.Errorf("dead letter %+v, handled %d+%d; want max_retries naming failed, nothing run", r, ok.len(), failed.len())
	}
}

// A message no local handler wants is acknowledged after a look at its
// envelope's type, without decoding the payload (SomeoneElses is not even
// registered here); one whose type field lies, or whose bytes are not an
// envelope, is dead-lettered, not acknowledged unhandled.
func TestUnwantedTypeCheckedAgainstEnvelope(t *testing.T) {
	d, s := newDispatcher(t, Config{})
	pongs := &recorder{}
	if _, err := d.Subscribe("Pong", pongs); err != nil {
		t.Fatal(err)
	}
	unregistered := []byte(`{"id":"0190b1a4-8c4e-7c3a-9c2e-1b2d3e4f5a6b","type":"SomeoneElses","aggregate_id":"a","data":{"x":1}}`)
	lying := message(t, envelope("b", 1, Pong{7}))
	lying.Type = "SomeoneElses" // a typo in a foreign producer's type field
	wrongCase := message(t, envelope("c", 1, Pong{8}))
	wrongCase.Type = "pong"
	dispatch(t, d,
		Message{ID: "ok", Key: "a", Type: "SomeoneElses", Body: unregistered, Attempt: 1},
		Message{ID: "garbage", Key: "z", Type: "SomeoneElses", Body: []byte("not for us"), Attempt: 1},
		lying, wrongCase)
	waitUntil(t, "settled", func() bool { a, dl, _ := s.snapshot(); return len(a)+len(dl) == 4 })
	drain(t, d)
	acked, dead, _ := s.snapshot()
	if len(acked) != 1 || acked[0].ID != "ok" {
		t.Errorf("acked %v; want only the well-formed message of another type", acked)
	}
	reasons := map[string]Reason{}
	for _, r := range dead {
		reasons[r.SourceID] = r.Reason
	}
	want := map[string]Reason{"garbage": ReasonMalformed, lying.ID: ReasonTypeMismatch, wrongCase.ID: ReasonTypeMismatch}
	if fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Errorf("dead letters %v; want %v", reasons, want)
	}
	if pongs.len() != 0 {
		t.Errorf("the Pong handler ran %d times on messages whose type field disagreed", pongs.len())
	}
}

// A retry or replay runs the handlers it names; one naming a handler this
// process lacks (renamed, or not deployed here) is dead-lettered with
// the names, not run by the others and acknowledged.
func TestReplayRunsOnlyNamedHandlers(t *testing.T) {
	d, s := newDispatcher(t, Config{})
	fixed, other := &recorder{}, &recorder{}
	if _, err := d.Subscribe("Ping", fixed, bus.WithName("fixed")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Subscribe("Ping", other, bus.WithName("other")); err != nil {
		t.Fatal(err)
	}
	m := message(t, envelope("a", 1, Ping{}))
	m.Handlers = []string{"fixed"}
	gone := message(t, envelope("a", 2, Ping{}))
	gone.Handlers = []string{"fixed", "renamed"}
	dispatch(t, d, m, gone)
	waitUntil(t, "settled", func() bool { a, dl, _ := s.snapshot(); return len(a) == 1 && len(dl) == 1 })
	drain(t, d)
	if fixed.len() != 1 || other.len() != 0 {
		t.Errorf("fixed %d other %d; want 1, 0", fixed.len(), other.len())
	}
	_, dead, _ := s.snapshot()
	if r := dead[0]; r.Reason != ReasonUnknownHandler || !slices.Equal(r.Handlers, []string{"fixed", "renamed"}) || r.SourceID != gone.ID {
		t.Errorf("dead letter %+v; want unknown_handler naming fixed, renamed", r)
	}
}

// Default names are derived from the subscription alone, and a name is
// one handler's: a second subscription under it is refused.
func TestHandlerNamesStableAndUnique(t *testing.T) {
	d, _ := newDispatcher(t, Config{})
	if _, err := d.SubscribeTypes([]string{"Pong", "Ping"}, &recorder{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SubscribeAll(&recorder{}); err != nil {
		t.Fatal(err)
	}
	for _, again := range []func() error{
		func() error { _, err := d.SubscribeTypes([]string{"Ping", "Pong"}, &recorder{}); return err },
		func() error { _, err := d.SubscribeAll(&recorder{}); return err },
		func() error { _, err := d.Subscribe("Pong", &recorder{}, bus.WithName("Ping,Pong")); return err },
	} {
		if err := again(); !errors.Is(err, bus.ErrInvalidSubscription) {
			t.Errorf("a second subscription under a taken name: %v; want ErrInvalidSubscription", err)
		}
	}
	rt := d.routes.Load()
	if _, ok := rt.byName["Ping,Pong"]; !ok {
		t.Errorf("names %v; want the sorted types Ping,Pong", rt.byName)
	}
	if _, ok := rt.byName["*"]; !ok {
		t.Errorf("names %v; want * for the wildcard", rt.byName)
	}
	drain(t, d)
}

func TestUnsubscribeSkipsRetries(t *testing.T) {
	d, s := newDispatcher(t, Config{Retry: RetryPolicy{MaxRetries: 1 << 20, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1}})
	var failures atomic.Int32
	sub, err := d.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		failures.Add(1)
		return errors.New("fail")
	}))
	if err != nil {
		t.Fatal(err)
	}
	dispatch(t, d, message(t, envelope("a", 1, Ping{})))
	waitUntil(t, "failing", func() bool { return failures.Load() >= 2 })
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "ack", func() bool { a, _, _ := s.snapshot(); return len(a) == 1 })
	drain(t, d)
	if st := d.Stats(); st.WildcardSubscribers != 0 {
		t.Errorf("wildcards %d after Unsubscribe", st.WildcardSubscribers)
	}
}

// Close finishes what runs, acknowledges it, and releases what waits for a
// retry together with what is held behind it.
func TestCloseReleasesWaiting(t *testing.T) {
	d, s := newDispatcher(t, Config{Retry: RetryPolicy{MaxRetries: 5, InitialBackoff: time.Hour, MaxBackoff: time.Hour, Multiplier: 1}})
	var failures atomic.Int32
	rec := &recorder{fail: func(env eventsource.Envelope) error {
		if env.AggregateID == "stuck" {
			failures.Add(1)
			return errors.New("down")
		}
		return nil
	}}
	if _, err := d.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	dispatch(t, d, message(t, envelope("stuck", 1, Ping{})), message(t, envelope("stuck", 2, Ping{})), message(t, envelope("ok", 1, Ping{})))
	waitUntil(t, "first failure and the other ack", func() bool { a, _, _ := s.snapshot(); return failures.Load() == 1 && len(a) == 1 })
	drain(t, d)
	acked, _, released := s.snapshot()
	if len(acked) != 1 || len(released) != 2 {
		t.Errorf("acked %d released %d; want 1, 2", len(acked), len(released))
	}
	if st := d.Stats(); st.InFlight != 0 || d.Released() != 2 {
		t.Errorf("in flight %d released %d", st.InFlight, d.Released())
	}
}

func TestAckFailureRetried(t *testing.T) {
	d, s := newDispatcher(t, Config{})
	s.failAcks.Store(2)
	if _, err := d.SubscribeAll(&recorder{}); err != nil {
		t.Fatal(err)
	}
	dispatch(t, d, message(t, envelope("a", 1, Ping{})))
	waitUntil(t, "ack", func() bool { a, _, _ := s.snapshot(); return len(a) == 1 })
	drain(t, d)
	if st := d.Stats(); st.Handled != 1 {
		t.Errorf("handled %d", st.Handled)
	}
}

func TestCloseGivesUpOnContext(t *testing.T) {
	d, _ := newDispatcher(t, Config{})
	release := make(chan struct{})
	started := make(chan struct{})
	if _, err := d.SubscribeAll(bus.HandlerFunc(func(ctx context.Context, _ eventsource.Envelope) error {
		close(started)
		select {
		case <-ctx.Done():
		case <-release:
		}
		return ctx.Err()
	})); err != nil {
		t.Fatal(err)
	}
	dispatch(t, d, message(t, envelope("a", 1, Ping{})))
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := d.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want deadline exceeded", err)
	}
	close(release)
}

// When Close gives up while an event cannot be settled, the event is
// released, and the events of its aggregate after it in the same batch
// are released too, not handled and acknowledged ahead of it.
func TestCloseGivingUpKeepsOrderWithinBatch(t *testing.T) {
	d, s := newDispatcher(t, Config{})
	s.failDead.Store(true)
	rec := &recorder{}
	if _, err := d.SubscribeAll(bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
		if env.Version == 1 {
			return bus.Permanent(errors.New("poison"))
		}
		return rec.Handle(ctx, env)
	})); err != nil {
		t.Fatal(err)
	}
	first, second := message(t, envelope("a", 1, Ping{})), message(t, envelope("a", 2, Ping{}))
	if _, err := d.DispatchBatch(context.Background(), []Message{first, second}); err != nil {
		t.Fatal(err)
	}
	<-s.changed // the dead letter of the first failed: it is being retried
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := d.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want deadline exceeded", err)
	}
	// The worker finishes after Close gave up: wait until both are accounted for.
	waitUntil(t, "both events released or handled", func() bool {
		_, _, released := s.snapshot()
		return len(released)+rec.len() >= 2
	})
	acked, _, released := s.snapshot()
	if rec.len() != 0 || len(acked) != 0 || len(released) != 2 {
		t.Errorf("handled %d, acked %d, released %d; want 0, 0, 2 (version 2 must not overtake version 1)", rec.len(), len(acked), len(released))
	}
}

func TestDispatchBlocksAtMaxInFlight(t *testing.T) {
	d, _ := newDispatcher(t, Config{MaxInFlight: 1})
	gate := make(chan struct{})
	if _, err := d.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { <-gate; return nil })); err != nil {
		t.Fatal(err)
	}
	dispatch(t, d, message(t, envelope("a", 1, Ping{})))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := d.Dispatch(ctx, message(t, envelope("b", 1, Ping{}))); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dispatch at the bound = %v, want it to wait for ctx", err)
	}
	close(gate)
	drain(t, d)
}

func TestRetryPolicy(t *testing.T) {
	p := RetryPolicy{}.WithDefaults()
	if p != DefaultRetryPolicy() {
		t.Errorf("zero policy defaults to %+v", p)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	p = RetryPolicy{MaxRetries: 6, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Multiplier: 2, Jitter: 0.5}
	for f, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 9: time.Second} {
		if got := p.backoff(f, 0.5); got != want {
			t.Errorf("backoff(%d) = %v, want %v", f, got, want)
		}
		if lo, hi := p.backoff(f, 0), p.backoff(f, 0.999999); lo != want/2 || hi < want*3/2-time.Millisecond || hi > want*3/2 {
			t.Errorf("backoff(%d) jitter range [%v, %v], want [%v, %v]", f, lo, hi, want/2, want*3/2)
		}
	}
	for range 1000 {
		if b := p.Backoff(3); b < 200*time.Millisecond || b > 600*time.Millisecond {
			t.Fatalf("Backoff(3) = %v out of range", b)
		}
	}
	// 100+200+400+800+1000 ms, times 1.5
	if got, want := p.MaxTotalBackoff(), 3750*time.Millisecond; got != want {
		t.Errorf("MaxTotalBackoff = %v, want %v", got, want)
	}
	for _, bad := range []RetryPolicy{
		{MaxRetries: 0, Multiplier: 1},
		{MaxRetries: 1, Multiplier: 0.5},
		{MaxRetries: 1, Multiplier: 1, InitialBackoff: 2, MaxBackoff: 1},
		{MaxRetries: 1, Multiplier: 1, Jitter: 2},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

// A batch larger than MaxInFlight is handed over piecemeal, not deadlocked
// on slots that only its own unsent messages hold.
func TestDispatchBatchLargerThanMaxInFlight(t *testing.T) {
	d, s := newDispatcher(t, Config{MaxInFlight: 3, Workers: 2})
	rec := &recorder{}
	if _, err := d.Subscribe("Ping", rec); err != nil {
		t.Fatal(err)
	}
	var msgs []Message
	for i := range 50 {
		msgs = append(msgs, message(t, envelope(fmt.Sprint("a", i%5), int64(i/5+1), Ping{i})))
	}
	msgs = append(msgs, message(t, envelope("x", 1, Pong{}))) // nobody wants it
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := d.DispatchBatch(ctx, msgs); err != nil || n != len(msgs) {
		t.Fatalf("DispatchBatch = %d, %v", n, err)
	}
	waitUntil(t, "all acked", func() bool { a, _, _ := s.snapshot(); return len(a) == len(msgs) })
	drain(t, d)
	for a := range 5 {
		if got := rec.versions(fmt.Sprint("a", a)); len(got) != 10 || !slices.IsSorted(got) {
			t.Errorf("a%d: %v", a, got)
		}
	}
}
