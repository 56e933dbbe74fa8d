package bustest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// Handler names are identities: a replay after a deploy that subscribes
// in another order runs the handler that failed and no other; a replay
// in a process that lacks the handler is dead-lettered again, naming it,
// and runs nothing. Default names only, as most users leave them.
func (s *dlSuite) testReplayAfterRedeploy(t *testing.T) {
	ns := namespace(t)
	cfg := Config{Namespace: ns, Group: "redeploy", Registry: NewRegistry(), MaxRetries: 1}
	failing := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return errors.New(flakyError) })

	first := s.open(t, cfg)
	audit1 := NewRecorder()
	if _, err := first.SubscribeAll(audit1); err != nil { // named "*"
		t.Fatal(err)
	}
	if _, err := first.Subscribe(Ping{}.EventType(), failing); err != nil { // named "BustestPing"
		t.Fatal(err)
	}
	start(t, first, s.opts.Timeout)
	events := []eventsource.Envelope{NewEnvelope("redeploy-0", 1, Ping{N: 0}), NewEnvelope("redeploy-1", 1, Ping{N: 1})}
	s.deadLetterEach(t, first, events)
	audit1.WaitFor(t, len(events), s.opts.Timeout)
	recs, err := first.DeadLetters().List(s.ctx(t), "", 10)
	if err != nil || len(recs) != 2 {
		t.Fatalf("List = %q, %v; want 2 records", eventIDs(recs), err)
	}
	s.drain(t, first)
	for _, r := range recs {
		if fmt.Sprint(r.Handlers) != "[BustestPing]" {
			t.Fatalf("dead letter names handlers %q; want [BustestPing]", r.Handlers)
		}
	}

	// The next deploy subscribes the other way round.
	second := s.open(t, cfg)
	writer, audit2 := NewRecorder(), NewRecorder()
	if _, err := second.Subscribe(Ping{}.EventType(), writer); err != nil {
		t.Fatal(err)
	}
	if _, err := second.SubscribeAll(audit2); err != nil {
		t.Fatal(err)
	}
	start(t, second, s.opts.Timeout)
	if err := second.DeadLetters().Replay(s.ctx(t), recs[0].ID); err != nil {
		t.Fatal(err)
	}
	writer.WaitFor(t, 1, s.opts.Timeout)
	s.waitHandled(t, second, 1)
	s.drain(t, second)
	assertSameSet(t, "the failed handler, replayed", writer.Got(), events[:1])
	if audit2.Len() != 0 {
		t.Errorf("the replay ran the audit handler %d times; it had succeeded already", audit2.Len())
	}

	// A process without the failed handler must not run the others and
	// acknowledge: the record comes back, saying which handler is missing.
	third := s.open(t, cfg)
	audit3 := NewRecorder()
	if _, err := third.SubscribeAll(audit3); err != nil {
		t.Fatal(err)
	}
	start(t, third, s.opts.Timeout)
	admin := third.DeadLetters()
	if err := admin.Replay(s.ctx(t), recs[1].ID); err != nil {
		t.Fatal(err)
	}
	s.waitUntil(t, "the replay dead-lettered again",
		func() bool { return third.Stats().DeadLettered == 1 },
		func() string { return fmt.Sprintf("%+v", third.Stats()) })
	left, err := admin.List(s.ctx(t), "", 10)
	if err != nil || len(left) != 1 {
		t.Fatalf("List = %q, %v; want 1 record", eventIDs(left), err)
	}
	if r := left[0]; r.EventID != events[1].ID.String() || r.Reason != consumer.ReasonUnknownHandler || fmt.Sprint(r.Handlers) != "[BustestPing]" {
		t.Errorf("record %s: reason %q, handlers %q; want %s, %q, [BustestPing]", r.EventID, r.Reason, r.Handlers, events[1].ID, consumer.ReasonUnknownHandler)
	}
	s.drain(t, third)
	if audit3.Len() != 0 {
		t.Errorf("a replay for a missing handler ran the audit handler %d times", audit3.Len())
	}
}

// Every consumed message ends handled, dead-lettered with a reason, or
// redelivered: good events, poison, garbage, type fields that lie, and a
// record too large to dead-letter whole, in one stream, counted.
func (s *dlSuite) testEveryMessageSettled(t *testing.T) {
	if s.opts.Inject == nil {
		t.Fatal("DeadLetterOptions.Inject is required")
	}
	cfg := Config{Namespace: namespace(t), Group: "settled", Registry: NewRegistry(), MaxRetries: 2}
	b := s.open(t, cfg)
	good := NewRecorder()
	good.fail = func(env eventsource.Envelope) error {
		if env.AggregateID == "poison" {
			return errors.New("poison")
		}
		return nil
	}
	if _, err := b.Subscribe(Ping{}.EventType(), good); err != nil {
		t.Fatal(err)
	}
	start(t, b, s.opts.Timeout)

	var goods []eventsource.Envelope
	for i := range 60 {
		goods = append(goods, NewEnvelope(fmt.Sprint("good-", i%6), int64(i/6+1), Ping{N: i}))
	}
	if err := b.Publish(s.ctx(t), goods[:30]...); err != nil {
		t.Fatal(err)
	}
	want := map[consumer.Reason]int{}
	for i := range 3 {
		if err := b.Publish(s.ctx(t), NewEnvelope("poison", int64(i+1), Ping{N: -i})); err != nil {
			t.Fatal(err)
		}
		want[consumer.ReasonMaxRetries]++
	}
	codec := eventsource.NewJSONCodec(cfg.Registry)
	encode := func(env eventsource.Envelope) []byte {
		body, err := codec.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	ping := Ping{}.EventType()
	for i, garbage := range []string{"not json", `{"type":"BustestPing"}`, `{"id":"x","type":"BustestPing","data":{"N":"not a number"}}`} {
		s.opts.Inject(t, cfg, []byte(garbage), ping, fmt.Sprint("garbage-", i))
		want[consumer.ReasonMalformed]++
	}
	// The type field is a copy; the envelope is the truth. A field that
	// disagrees, in content or only in case, is a producer's bug.
	pong := NewEnvelope("liar-0", 1, Pong{N: 1})
	s.opts.Inject(t, cfg, encode(pong), ping, pong.AggregateID)
	lower := NewEnvelope("liar-1", 1, Ping{N: 2})
	s.opts.Inject(t, cfg, encode(lower), "bustestping", lower.AggregateID)
	want[consumer.ReasonTypeMismatch] += 2
	oversized := 0
	if s.opts.Oversized > 0 {
		body := append([]byte(`{"padding":"`), bytes.Repeat([]byte("x"), s.opts.Oversized-len(`{"padding":""}`))...)
		body = append(body, `"}`...)
		oversized = len(body)
		s.opts.Inject(t, cfg, body, ping, "oversized")
		want[consumer.ReasonMalformed]++
	}
	if err := b.Publish(s.ctx(t), goods[30:]...); err != nil {
		t.Fatal(err)
	}

	dead := 0
	for _, n := range want {
		dead += n
	}
	distinct := uint64(len(goods) + dead) // messages put on the bus, each consumed at least once
	admin := b.DeadLetters()
	s.waitCount(t, admin, int64(dead))
	good.WaitFor(t, len(goods), s.opts.Timeout)
	s.waitUntil(t, "every message settled",
		func() bool { st := b.Stats(); return st.InFlight == 0 && st.Handled+st.DeadLettered == distinct },
		func() string { return fmt.Sprintf("%+v", b.Stats()) })
	recs, err := admin.List(s.ctx(t), "", 100)
	if err != nil {
		t.Fatal(err)
	}
	// Taken now: the replays below deliver again what the rest checks.
	handled, st := good.Got(), b.Stats()
	s.replayAllButDropped(t, b, recs)
	s.drain(t, b)
	assertSameSet(t, "good events", handled, goods)
	got := map[consumer.Reason]int{}
	for _, r := range recs {
		got[r.Reason]++
		if r.BodyDropped != (r.AggregateID == "oversized") {
			t.Errorf("record of %q: body dropped %v", r.AggregateID, r.BodyDropped)
		}
		if r.BodyDropped && (r.Size != oversized || r.Source == "" || r.SourceID == "") {
			t.Errorf("oversized record: size %d (want %d), source %q %q", r.Size, oversized, r.Source, r.SourceID)
		}
		if !r.BodyDropped && len(r.Body) == 0 {
			t.Errorf("record of %q (%s) lost its body", r.AggregateID, r.Reason)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dead letters by reason %v; want %v", got, want)
	}
	// Received also counts a broker-side retry's second delivery.
	if st.DeadLettered != uint64(dead) || st.Handled+st.DeadLettered != distinct || st.Received < distinct {
		t.Errorf("stats: received %d, handled %d, dead-lettered %d; want %d handled + %d dead-lettered, out of %d received or more",
			st.Received, st.Handled, st.DeadLettered, len(goods), dead, distinct)
	}
}

// replayAllButDropped replays recs, b's dead letters: a record without
// its bytes cannot be replayed, by Replay (ErrBodyDropped) or ReplayAll,
// and stays, with its size and origin; ReplayAll replays the others. It
// returns once b has read the replays.
func (s *dlSuite) replayAllButDropped(t *testing.T, b DeadLetterBus, recs []consumer.DeadLetter) {
	t.Helper()
	admin := b.DeadLetters()
	i := slices.IndexFunc(recs, func(r consumer.DeadLetter) bool { return r.BodyDropped })
	if i >= 0 {
		if err := admin.Replay(s.ctx(t), recs[i].ID); !errors.Is(err, consumer.ErrBodyDropped) {
			t.Errorf("Replay of a record without its body = %v, want an error matching ErrBodyDropped", err)
		}
		if n, err := admin.Count(s.ctx(t)); err != nil || n != int64(len(recs)) {
			t.Errorf("Count after Replay of a record without its body = %d, %v; want %d, the record kept", n, err, len(recs))
		}
	}
	received := b.Stats().Received
	want := len(recs)
	if i >= 0 {
		want--
	}
	n, err := admin.ReplayAll(s.ctx(t))
	if err != nil || n != want {
		t.Errorf("ReplayAll = %d, %v; want %d, every record but the one without its body", n, err, want)
	}
	if i >= 0 {
		// Replayed records that fail again come back behind it.
		left, err := admin.List(s.ctx(t), "", len(recs)+1)
		if err != nil {
			t.Fatal(err)
		}
		j := slices.IndexFunc(left, func(r consumer.DeadLetter) bool { return r.ID == recs[i].ID })
		if j < 0 {
			t.Errorf("ReplayAll removed the record without its body; left %q", eventIDs(left))
		} else if r, was := left[j], recs[i]; !r.BodyDropped || r.Size != was.Size || r.Source != was.Source || r.SourceID != was.SourceID {
			t.Errorf("record without its body after ReplayAll: dropped %v, size %d, source %q %q; want true, %d, %q %q",
				r.BodyDropped, r.Size, r.Source, r.SourceID, was.Size, was.Source, was.SourceID)
		}
	}
	// What the replays come to differs by bus (a type a lying field hid,
	// a retry through the broker); that they were read is enough here.
	s.waitUntil(t, "the replays read",
		func() bool { st := b.Stats(); return st.Received >= received+uint64(n) && st.InFlight == 0 },
		func() string { return fmt.Sprintf("%+v", b.Stats()) })
}

// A handler that marks its error permanent (bus.Permanent) is not retried:
// the event is dead-lettered after one attempt, with reason permanent and
// the handler's name, while a healthy sibling still handles it once.
func (s *dlSuite) testPermanentError(t *testing.T) {
	b := s.open(t, Config{Namespace: namespace(t), Group: "permanent", Registry: NewRegistry(), MaxRetries: 5})
	var calls atomic.Int32
	rejecting := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		calls.Add(1)
		return bus.Permanent(errors.New("order total is negative"))
	})
	if _, err := b.Subscribe(Ping{}.EventType(), rejecting, bus.WithName("validator")); err != nil {
		t.Fatal(err)
	}
	sibling := NewRecorder()
	if _, err := b.SubscribeAll(sibling); err != nil {
		t.Fatal(err)
	}
	start(t, b, s.opts.Timeout)
	env := NewEnvelope("perm", 1, Ping{N: -1})
	if err := b.Publish(s.ctx(t), env); err != nil {
		t.Fatal(err)
	}
	admin := b.DeadLetters()
	s.waitCount(t, admin, 1)
	sibling.WaitFor(t, 1, s.opts.Timeout)
	recs, err := admin.List(s.ctx(t), "", 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("List = %q, %v; want 1 record", eventIDs(recs), err)
	}
	s.drain(t, b)
	if r := recs[0]; r.Reason != consumer.ReasonPermanent || r.Attempts != 1 || fmt.Sprint(r.Handlers) != "[validator]" ||
		!strings.Contains(r.Error, "order total is negative") {
		t.Errorf("record: reason %q, attempts %d, handlers %q, error %q; want permanent, 1, [validator], the handler's error",
			r.Reason, r.Attempts, r.Handlers, r.Error)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the handler ran %d times; want once", n)
	}
	if st := b.Stats(); st.Retries != 0 {
		t.Errorf("Stats.Retries = %d; want 0", st.Retries)
	}
}
