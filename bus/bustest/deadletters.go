package bustest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// DeadLetterBus is a bus with a dead-letter destination per consumer group.
type DeadLetterBus interface {
	bus.Bus
	// DeadLetters manages the dead letters of the bus's group.
	DeadLetters() consumer.Admin
}

// DeadLetterFactory opens a bus for RunDeadLetters. It honours
// Config.MaxRetries; otherwise it is like Factory: the suite closes every
// bus it opens, the factory registers broker cleanup with t.Cleanup.
type DeadLetterFactory func(t *testing.T, cfg Config) DeadLetterBus

// DeadLetterResult is what the max-retries case saw, for the checks that
// are particular to one bus (Record.Source naming, Stats.Received).
type DeadLetterResult struct {
	// Bus is the failing group's bus, closed; Config opened it.
	Bus    DeadLetterBus
	Config Config
	// Record is the dead letter of the event, as List returned it.
	Record consumer.DeadLetter
	// Stats are Bus's final counters: Config.MaxRetries failed attempts,
	// then one replay that succeeded.
	Stats bus.Stats
}

// DeadLetterOptions tunes RunDeadLetters.
type DeadLetterOptions struct {
	// Timeout bounds every wait (default 15s).
	Timeout time.Duration
	// Check, if set, runs the bus's own checks at the end of the
	// max-retries case.
	Check func(t *testing.T, r DeadLetterResult)
	// Inject puts raw bytes on the events destination of cfg's namespace
	// as a producer in another language would: body as it is, with
	// typeField as the transport's copy of the type (a stream field, a
	// header) and key as its copy of the aggregate ID. Required.
	Inject func(t *testing.T, cfg Config, body []byte, typeField, key string)
	// Oversized, if set, is the size of a record that the broker takes on
	// the events destination but refuses in the dead-letter destination
	// once the dead letter's own fields are added; the suite injects one.
	Oversized int
}

// RunDeadLetters runs the dead-letter suite: what a failing handler leaves
// in its group's dead-letter destination, and the consumer.Admin API.
func RunDeadLetters(t *testing.T, opts DeadLetterOptions, factory DeadLetterFactory) {
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Second
	}
	s := &dlSuite{opts: opts, factory: factory}
	t.Run("MaxRetriesThenReplay", s.testMaxRetriesThenReplay)
	t.Run("ListPagesThenReplayAll", s.testListPagesThenReplayAll)
	t.Run("Purge", s.testPurge)
	t.Run("ReplayAfterRedeploy", s.testReplayAfterRedeploy)
	t.Run("ReplayKeepsOrigin", s.testReplayKeepsOrigin)
	t.Run("EveryMessageSettled", s.testEveryMessageSettled)
	t.Run("PermanentErrorNotRetried", s.testPermanentError)
}

type dlSuite struct {
	opts    DeadLetterOptions
	factory DeadLetterFactory
}

// open returns a bus; the suite closes it at the end of the test if the
// test has not.
func (s *dlSuite) open(t *testing.T, cfg Config) DeadLetterBus {
	t.Helper()
	b := s.factory(t, cfg)
	closeAtCleanup(t, b, s.opts.Timeout)
	return b
}

func (s *dlSuite) drain(t *testing.T, b bus.Bus) {
	t.Helper()
	drain(t, b, s.opts.Timeout)
}

func (s *dlSuite) ctx(t *testing.T) context.Context { return timeoutCtx(t, s.opts.Timeout) }

// waitUntil polls cond until it holds or the timeout passes; state
// describes what was seen, for the failure message.
func (s *dlSuite) waitUntil(t *testing.T, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(s.opts.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (%s)", s.opts.Timeout, what, state())
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// waitCount waits until admin counts n records.
func (s *dlSuite) waitCount(t *testing.T, admin consumer.Admin, n int64) {
	t.Helper()
	ctx := s.ctx(t)
	var got int64
	var err error
	s.waitUntil(t, fmt.Sprintf("%d dead letters", n),
		func() bool { got, err = admin.Count(ctx); return err == nil && got == n },
		func() string { return fmt.Sprintf("Count = %d, %v", got, err) })
}

// waitHandled waits until b's Stats count n events handled and
// acknowledged, so that closing b does not hand them back to the broker.
func (s *dlSuite) waitHandled(t *testing.T, b bus.Bus, n uint64) {
	t.Helper()
	s.waitUntil(t, fmt.Sprintf("%d events handled and acknowledged", n),
		func() bool { return b.Stats().Handled == n },
		func() string { return fmt.Sprintf("Stats.Handled = %d", b.Stats().Handled) })
}

// flaky is a handler that fails while broken; it records what it handled.
type flaky struct {
	*Recorder
	broken atomic.Bool
	calls  atomic.Int32
}

const flakyError = "bustest: database down"

func newFlaky() *flaky {
	h := &flaky{Recorder: NewRecorder()}
	h.broken.Store(true)
	return h
}

func (h *flaky) Handle(ctx context.Context, env eventsource.Envelope) error {
	h.calls.Add(1)
	if h.broken.Load() {
		return errors.New(flakyError)
	}
	return h.Recorder.Handle(ctx, env)
}

func eventIDs(recs []consumer.DeadLetter) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.EventID
	}
	return out
}

func envIDs(envs []eventsource.Envelope) []string {
	out := make([]string, len(envs))
	for i, e := range envs {
		out[i] = e.ID.String()
	}
	return out
}

// A handler that keeps failing: the event is dead-lettered after exactly
// MaxRetries attempts with a full record; a healthy sibling and another
// group see it once; Replay delivers it once more to the fixed handler
// only; replaying the record again is ErrNotFound.
func (s *dlSuite) testMaxRetriesThenReplay(t *testing.T) {
	const maxRetries = 3
	ns := namespace(t)
	cfg := Config{Namespace: ns, Group: "dl-a", Registry: NewRegistry(), MaxRetries: maxRetries}
	b := s.open(t, cfg)
	other := s.open(t, Config{Namespace: ns, Group: "dl-b", Registry: NewRegistry(), MaxRetries: maxRetries})
	writer, sibling, otherGroup := newFlaky(), NewRecorder(), NewRecorder()
	if _, err := b.Subscribe(Ping{}.EventType(), writer, bus.WithName("writer")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(Ping{}.EventType(), sibling, bus.WithName("sibling")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.SubscribeAll(otherGroup); err != nil {
		t.Fatal(err)
	}
	start(t, b, s.opts.Timeout)
	start(t, other, s.opts.Timeout)
	env := NewEnvelope("dl", 1, Ping{N: 1})
	env.Metadata.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	start := time.Now()
	if err := b.Publish(s.ctx(t), env); err != nil {
		t.Fatal(err)
	}
	admin := b.DeadLetters()
	s.waitCount(t, admin, 1)
	if n := writer.calls.Load(); n != maxRetries {
		t.Errorf("failing handler called %d times before dead-lettering, want %d", n, maxRetries)
	}
	recs, err := admin.List(s.ctx(t), "", 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("List = %+v, %v; want one record", recs, err)
	}
	r := recs[0]
	if r.ID == "" || r.Reason != consumer.ReasonMaxRetries || r.Attempts != maxRetries || r.Group != "dl-a" ||
		!strings.Contains(r.Error, flakyError) || !slices.Equal(r.Handlers, []string{"writer"}) {
		t.Errorf("dead letter: ID %q, reason %q, attempts %d, group %q, error %q, handlers %q; "+
			"want an ID, %q, %d, %q, %q, [writer]",
			r.ID, r.Reason, r.Attempts, r.Group, r.Error, r.Handlers, consumer.ReasonMaxRetries, maxRetries, "dl-a", flakyError)
	}
	if r.EventID != env.ID.String() || r.EventType != env.Type || r.AggregateType != env.AggregateType ||
		r.AggregateID != env.AggregateID || r.Version != env.Version {
		t.Errorf("dead letter names event %s %s %s/%s v%d, want %s %s %s/%s v%d",
			r.EventID, r.EventType, r.AggregateType, r.AggregateID, r.Version,
			env.ID, env.Type, env.AggregateType, env.AggregateID, env.Version)
	}
	if len(r.Body) == 0 || r.Source == "" {
		t.Errorf("dead letter has body %q, source %q; want both", r.Body, r.Source)
	}
	if skew := time.Minute; r.Time.Before(start.Add(-skew)) || r.Time.After(time.Now().Add(skew)) {
		t.Errorf("dead letter time %v, want about %v", r.Time, start)
	}
	if more, err := admin.List(s.ctx(t), r.ID, 10); err != nil || len(more) != 0 {
		t.Errorf("List after the last record = %+v, %v; want none", more, err)
	}
	sibling.WaitFor(t, 1, s.opts.Timeout)
	otherGroup.WaitFor(t, 1, s.opts.Timeout)

	writer.broken.Store(false)
	if err := admin.Replay(s.ctx(t), r.ID); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if err := admin.Replay(s.ctx(t), r.ID); !errors.Is(err, eventsource.ErrNotFound) {
		t.Errorf("second Replay = %v, want ErrNotFound", err)
	}
	writer.WaitFor(t, 1, s.opts.Timeout)
	s.waitHandled(t, b, 1)
	if n, err := admin.Count(s.ctx(t)); err != nil || n != 0 {
		t.Errorf("Count after Replay = %d, %v; want 0", n, err)
	}
	s.drain(t, b)
	s.drain(t, other)
	want := []eventsource.Envelope{env}
	assertSameSet(t, "replayed handler", writer.Got(), want)
	assertSameSet(t, "healthy sibling", sibling.Got(), want)
	assertSameSet(t, "other group", otherGroup.Got(), want)
	if n := writer.calls.Load(); n != maxRetries+1 {
		t.Errorf("failing handler called %d times in all, want %d (one replay)", n, maxRetries+1)
	}
	st := b.Stats()
	if st.DeadLettered != 1 || st.Retries != maxRetries-1 || st.HandlerErrors != maxRetries || st.Handled != 1 {
		t.Errorf("stats: dead-lettered %d, retries %d, handler errors %d, handled %d; want 1, %d, %d, 1",
			st.DeadLettered, st.Retries, st.HandlerErrors, st.Handled, maxRetries-1, maxRetries)
	}
	if ost := other.Stats(); ost.DeadLettered != 0 || ost.HandlerErrors != 0 || ost.Handled != 1 {
		t.Errorf("other group's stats: dead-lettered %d, handler errors %d, handled %d; want 0, 0, 1",
			ost.DeadLettered, ost.HandlerErrors, ost.Handled)
	}
	if s.opts.Check != nil {
		s.opts.Check(t, DeadLetterResult{Bus: b, Config: cfg, Record: r, Stats: st})
	}
}

// deadLetterEach publishes the events one by one, each once the previous
// one is dead-lettered, so that the records' order is the events' order.
func (s *dlSuite) deadLetterEach(t *testing.T, b DeadLetterBus, events []eventsource.Envelope) {
	t.Helper()
	for i, env := range events {
		if err := b.Publish(s.ctx(t), env); err != nil {
			t.Fatal(err)
		}
		s.waitCount(t, b.DeadLetters(), int64(i+1))
	}
}

// List pages through the records oldest first; ReplayAll replays every
// one of them and returns how many.
func (s *dlSuite) testListPagesThenReplayAll(t *testing.T) {
	b := s.open(t, Config{Namespace: namespace(t), Group: "dl", Registry: NewRegistry(), MaxRetries: 1})
	h := newFlaky()
	if _, err := b.SubscribeAll(h); err != nil {
		t.Fatal(err)
	}
	start(t, b, s.opts.Timeout)
	var events []eventsource.Envelope
	for i := range 5 {
		events = append(events, NewEnvelope(fmt.Sprint("list-", i), 1, Ping{N: i}))
	}
	s.deadLetterEach(t, b, events)
	admin := b.DeadLetters()
	if n := h.calls.Load(); n != int32(len(events)) {
		t.Errorf("handler called %d times, want %d (MaxRetries 1: no retry)", n, len(events))
	}
	all, err := admin.List(s.ctx(t), "", 10)
	if err != nil || !slices.Equal(eventIDs(all), envIDs(events)) {
		t.Fatalf("List = %q, %v; want %q", eventIDs(all), err, envIDs(events))
	}
	for _, r := range all {
		if r.Reason != consumer.ReasonMaxRetries || r.Attempts != 1 {
			t.Errorf("record of %s: reason %q, attempts %d; want %q, 1", r.EventID, r.Reason, r.Attempts, consumer.ReasonMaxRetries)
		}
	}
	var paged []consumer.DeadLetter
	after := ""
	for _, want := range [][]eventsource.Envelope{events[0:2], events[2:4], events[4:]} {
		page, err := admin.List(s.ctx(t), after, 2)
		if err != nil || !slices.Equal(eventIDs(page), envIDs(want)) {
			t.Fatalf("List(after %q, limit 2) = %q, %v; want %q", after, eventIDs(page), err, envIDs(want))
		}
		paged = append(paged, page...)
		after = page[len(page)-1].ID
	}
	if last, err := admin.List(s.ctx(t), after, 2); err != nil || len(last) != 0 {
		t.Errorf("List after the last record = %q, %v; want none", eventIDs(last), err)
	}
	for i := range paged {
		if paged[i].ID != all[i].ID {
			t.Errorf("record %d: ID %q by pages, %q in one List", i, paged[i].ID, all[i].ID)
		}
	}
	if n, err := admin.Count(s.ctx(t)); err != nil || n != int64(len(events)) {
		t.Errorf("Count = %d, %v; want %d", n, err, len(events))
	}

	h.broken.Store(false)
	if n, err := admin.ReplayAll(s.ctx(t)); err != nil || n != len(events) {
		t.Fatalf("ReplayAll = %d, %v; want %d", n, err, len(events))
	}
	h.WaitFor(t, len(events), s.opts.Timeout)
	s.waitHandled(t, b, uint64(len(events)))
	if n, err := admin.Count(s.ctx(t)); err != nil || n != 0 {
		t.Errorf("Count after ReplayAll = %d, %v; want 0", n, err)
	}
	s.drain(t, b)
	assertSameSet(t, "replayed", h.Got(), events)
	if n := h.calls.Load(); n != int32(2*len(events)) {
		t.Errorf("handler called %d times, want %d (one failure and one replay each)", n, 2*len(events))
	}
	if st := b.Stats(); st.DeadLettered != uint64(len(events)) || st.Retries != 0 {
		t.Errorf("stats: dead-lettered %d, retries %d; want %d, 0", st.DeadLettered, st.Retries, len(events))
	}
}

// Purge deletes every record and returns how many there were; a purged
// record cannot be replayed.
func (s *dlSuite) testPurge(t *testing.T) {
	b := s.open(t, Config{Namespace: namespace(t), Group: "dl", Registry: NewRegistry(), MaxRetries: 1})
	h := newFlaky()
	if _, err := b.SubscribeAll(h); err != nil {
		t.Fatal(err)
	}
	start(t, b, s.opts.Timeout)
	events := []eventsource.Envelope{
		NewEnvelope("purge-0", 1, Ping{N: 0}), NewEnvelope("purge-1", 1, Pong{N: 1}), NewEnvelope("purge-2", 1, Other{N: 2}),
	}
	if err := b.Publish(s.ctx(t), events...); err != nil {
		t.Fatal(err)
	}
	admin := b.DeadLetters()
	s.waitCount(t, admin, int64(len(events)))
	recs, err := admin.List(s.ctx(t), "", 10)
	if err != nil || len(recs) != len(events) {
		t.Fatalf("List = %q, %v; want %d records", eventIDs(recs), err, len(events))
	}
	if n, err := admin.Purge(s.ctx(t)); err != nil || n != int64(len(events)) {
		t.Errorf("Purge = %d, %v; want %d", n, err, len(events))
	}
	if n, err := admin.Count(s.ctx(t)); err != nil || n != 0 {
		t.Errorf("Count after Purge = %d, %v; want 0", n, err)
	}
	if left, err := admin.List(s.ctx(t), "", 10); err != nil || len(left) != 0 {
		t.Errorf("List after Purge = %q, %v; want none", eventIDs(left), err)
	}
	if err := admin.Replay(s.ctx(t), recs[0].ID); !errors.Is(err, eventsource.ErrNotFound) {
		t.Errorf("Replay of a purged record = %v, want ErrNotFound", err)
	}
	if n, err := admin.Purge(s.ctx(t)); err != nil || n != 0 {
		t.Errorf("second Purge = %d, %v; want 0", n, err)
	}
	if n, err := admin.ReplayAll(s.ctx(t)); err != nil || n != 0 {
		t.Errorf("ReplayAll after Purge = %d, %v; want 0", n, err)
	}
	h.broken.Store(false)
	s.drain(t, b)
	if n := h.calls.Load(); n != int32(len(events)) || h.Len() != 0 {
		t.Errorf("handler called %d times, handled %d; want %d, 0 (purged events are gone)", n, h.Len(), len(events))
	}
}

// A replayed event that fails again is dead-lettered again under its
// first origin: Source and SourceID still say where it was published, not
// the replay's own stream or queue, however many replays it went through,
// since they are how an operator finds the original bytes.
func (s *dlSuite) testReplayKeepsOrigin(t *testing.T) {
	b := s.open(t, Config{Namespace: namespace(t), Group: "origin", Registry: NewRegistry(), MaxRetries: 1})
	h := newFlaky()
	if _, err := b.Subscribe(Ping{}.EventType(), h); err != nil {
		t.Fatal(err)
	}
	start(t, b, s.opts.Timeout)
	env := NewEnvelope("origin", 1, Ping{N: 1})
	s.deadLetterEach(t, b, []eventsource.Envelope{env})
	admin := b.DeadLetters()
	recs, err := admin.List(s.ctx(t), "", 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("List = %q, %v; want 1 record", eventIDs(recs), err)
	}
	first := recs[0]
	if first.Source == "" || first.SourceID == "" {
		t.Fatalf("record source %q %q; want both", first.Source, first.SourceID)
	}
	rec := first
	for i := range 2 { // the second replays a record that a replay left
		if err := admin.Replay(s.ctx(t), rec.ID); err != nil {
			t.Fatalf("Replay %d: %v", i+1, err)
		}
		s.waitUntil(t, fmt.Sprintf("replay %d dead-lettered again", i+1),
			func() bool { return b.Stats().DeadLettered == uint64(i+2) },
			func() string { return fmt.Sprintf("%+v", b.Stats()) })
		recs, err := admin.List(s.ctx(t), "", 10)
		if err != nil || len(recs) != 1 {
			t.Fatalf("List after replay %d = %q, %v; want 1 record", i+1, eventIDs(recs), err)
		}
		rec = recs[0]
		if rec.EventID != env.ID.String() || rec.Reason != consumer.ReasonMaxRetries {
			t.Errorf("record after replay %d: event %s, reason %q; want %s, %q", i+1, rec.EventID, rec.Reason, env.ID, consumer.ReasonMaxRetries)
		}
		if rec.Source != first.Source || rec.SourceID != first.SourceID {
			t.Errorf("record after replay %d: source %q %q; want the first origin, %q %q",
				i+1, rec.Source, rec.SourceID, first.Source, first.SourceID)
		}
	}
	s.drain(t, b)
	if n := h.calls.Load(); n != 3 {
		t.Errorf("handler called %d times, want 3 (the event, then two replays)", n)
	}
}
