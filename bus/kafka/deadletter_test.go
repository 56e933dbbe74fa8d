package kafka

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// A handler that keeps failing: the event is dead-lettered after exactly
// MaxRetries attempts with its origin; replay delivers it once, to this
// group only; a second replay of the record is ErrNotFound.
func TestDeadLetterAndReplay(t *testing.T) {
	topic := uniqueTopic("kt-dl")
	b := open(t, Config{Topic: topic, Group: "g1"})
	other := open(t, Config{Topic: topic, Group: "g2"})
	defer closeBus(t, b)
	defer closeBus(t, other)
	var broken atomic.Bool
	broken.Store(true)
	var calls, handled, otherHandled atomic.Int32
	if _, err := b.Subscribe("BustestPing", bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		calls.Add(1)
		if broken.Load() {
			return errors.New("database down")
		}
		handled.Add(1)
		return nil
	}), bus.WithName("writer")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		otherHandled.Add(1)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	env := bustest.NewEnvelope("dl", 1, bustest.Ping{N: 1})
	env.Metadata.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := context.Background()
	if err := b.Publish(ctx, env); err != nil {
		t.Fatal(err)
	}
	admin := b.DeadLetters()
	waitUntil(t, "dead letter", func() bool { n, _ := admin.Count(ctx); return n == 1 })
	if calls.Load() != 3 {
		t.Errorf("handler called %d times before dead-lettering, want 3", calls.Load())
	}
	recs, err := admin.List(ctx, "", 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("List = %v, %v", recs, err)
	}
	r := recs[0]
	if r.Reason != consumer.ReasonMaxRetries || r.Attempts != 3 || r.Group != "g1" || r.EventID != env.ID.String() ||
		!strings.Contains(r.Error, "database down") || len(r.Handlers) != 1 || r.Handlers[0] != "writer" ||
		r.Source != topic || !strings.HasSuffix(r.SourceID, ":0") || r.Time.IsZero() || len(r.Body) == 0 ||
		r.Version != 1 || r.AggregateID != "dl" || r.ID != topic+":"+r.SourceID {
		t.Errorf("dead letter %+v", r)
	}
	if more, err := admin.List(ctx, r.ID, 10); err != nil || len(more) != 0 {
		t.Errorf("List after the last record = %v, %v", more, err)
	}
	broken.Store(false)
	if err := admin.Replay(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if err := admin.Replay(ctx, r.ID); !errors.Is(err, eventsource.ErrNotFound) {
		t.Errorf("second Replay = %v, want ErrNotFound", err)
	}
	waitUntil(t, "replayed event handled", func() bool { return handled.Load() == 1 })
	waitUntil(t, "replay acknowledged", func() bool { return b.Stats().Handled == 1 })
	if n, _ := admin.Count(ctx); n != 0 {
		t.Errorf("%d dead letters after replay", n)
	}
	closeBus(t, b)
	closeBus(t, other)
	if handled.Load() != 1 || calls.Load() != 4 || otherHandled.Load() != 1 {
		t.Errorf("after replay: handled %d, calls %d, other group %d; want 1, 4, 1", handled.Load(), calls.Load(), otherHandled.Load())
	}
	if st := b.Stats(); st.DeadLettered != 1 || st.Retries != 2 || st.HandlerErrors != 3 || st.Received != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestReplayAllAndPurge(t *testing.T) {
	b := open(t, Config{Topic: uniqueTopic("kt-purge"), Group: "g", Retry: consumer.RetryPolicy{MaxRetries: 1}})
	defer closeBus(t, b)
	var fail atomic.Bool
	fail.Store(true)
	var ok atomic.Int32
	if _, err := b.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		if fail.Load() {
			return errors.New("no")
		}
		ok.Add(1)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var events []eventsource.Envelope
	for i := range 5 {
		events = append(events, bustest.NewEnvelope(fmt.Sprint("r", i), 1, bustest.Ping{N: i}))
	}
	if err := b.Publish(ctx, events...); err != nil {
		t.Fatal(err)
	}
	admin := b.DeadLetters()
	waitUntil(t, "5 dead letters", func() bool { n, _ := admin.Count(ctx); return n == 5 })
	page, err := admin.List(ctx, "", 2)
	if err != nil || len(page) != 2 {
		t.Fatalf("List page = %v, %v", page, err)
	}
	rest, err := admin.List(ctx, page[1].ID, 10)
	if err != nil || len(rest) != 3 {
		t.Fatalf("List after %s = %d records, %v", page[1].ID, len(rest), err)
	}
	fail.Store(false)
	if n, err := admin.ReplayAll(ctx); err != nil || n != 5 {
		t.Fatalf("ReplayAll = %d, %v", n, err)
	}
	waitUntil(t, "replays handled", func() bool { return ok.Load() == 5 })
	fail.Store(true)
	if err := b.Publish(ctx, bustest.NewEnvelope("x", 1, bustest.Ping{})); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "new dead letter", func() bool { n, _ := admin.Count(ctx); return n == 1 })
	if n, err := admin.Purge(ctx); err != nil || n != 1 {
		t.Errorf("Purge = %d, %v", n, err)
	}
	if n, _ := admin.Count(ctx); n != 0 {
		t.Errorf("Count after Purge = %d", n)
	}
}

// A failing event waits for its retry in the retry topic; the events
// behind it on its partition keep flowing meanwhile.
func TestRetryDoesNotStallThePartition(t *testing.T) {
	b := open(t, Config{Topic: uniqueTopic("kt-stall"), Group: "g", Partitions: 1,
		Retry: consumer.RetryPolicy{MaxRetries: 2, InitialBackoff: 2 * time.Second, MaxBackoff: 2 * time.Second, Multiplier: 1}})
	defer closeBus(t, b)
	var slowDone, othersDone atomic.Int32
	var firstTry atomic.Bool
	firstTry.Store(true)
	if _, err := b.SubscribeAll(bus.HandlerFunc(func(_ context.Context, env eventsource.Envelope) error {
		if env.AggregateID == "slow" {
			if firstTry.Swap(false) {
				return errors.New("later")
			}
			slowDone.Add(1)
			return nil
		}
		othersDone.Add(1)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	evs := []eventsource.Envelope{bustest.NewEnvelope("slow", 1, bustest.Ping{})}
	for i := range 20 {
		evs = append(evs, bustest.NewEnvelope(fmt.Sprint("fast", i), 1, bustest.Ping{N: i}))
	}
	start := time.Now()
	if err := b.Publish(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the other events", func() bool { return othersDone.Load() == 20 })
	if slowDone.Load() != 0 || time.Since(start) > 1500*time.Millisecond {
		t.Errorf("the others waited for the retry: %v, slow done %d", time.Since(start), slowDone.Load())
	}
	waitUntil(t, "the retried event", func() bool { return slowDone.Load() == 1 })
	if waited := time.Since(start); waited < 2*time.Second {
		t.Errorf("retried after %v, before its 2s backoff", waited)
	}
}

// Garbage and an unknown type, written raw: dead-lettered with the right
// reason; the good events around them are handled.
func TestBadInputDeadLettered(t *testing.T) {
	topic := uniqueTopic("kt-bad")
	b := open(t, Config{Topic: topic, Group: "g", Partitions: 1})
	defer closeBus(t, b)
	var handled atomic.Int32
	if _, err := b.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { handled.Add(1); return nil })); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	unknown := `{"id":"0190c0e0-0000-7000-8000-000000000001","type":"NoSuchType","aggregate_id":"x","version":1,"occurred_at":"2026-01-01T00:00:00Z","data":{"a":1}}`
	if err := b.Publish(ctx, bustest.NewEnvelope("good", 1, bustest.Ping{})); err != nil {
		t.Fatal(err)
	}
	if err := b.writer.WriteMessages(ctx,
		kafkago.Message{Topic: topic, Value: []byte("\x00\xffnot an envelope{")},
		kafkago.Message{Topic: topic, Key: []byte("x"), Value: []byte(unknown)},
	); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, bustest.NewEnvelope("good", 2, bustest.Ping{})); err != nil {
		t.Fatal(err)
	}
	admin := b.DeadLetters()
	waitUntil(t, "2 dead letters and 2 good events", func() bool { n, _ := admin.Count(ctx); return n == 2 && handled.Load() == 2 })
	recs, err := admin.List(ctx, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	bySource := map[string]consumer.DeadLetter{}
	for _, r := range recs {
		bySource[r.SourceID] = r
	}
	if r := bySource["0:1"]; r.Reason != consumer.ReasonMalformed || string(r.Body) != "\x00\xffnot an envelope{" {
		t.Errorf("garbage: %+v", r)
	}
	if r := bySource["0:2"]; r.Reason != consumer.ReasonUnknownType || r.EventType != "NoSuchType" || r.AggregateID != "x" {
		t.Errorf("unknown type: %+v", r)
	}
}

// No goroutine of the bus or of kafka-go outlives Close.
func TestNoGoroutineOutlivesClose(t *testing.T) {
	b := open(t, Config{Topic: uniqueTopic("kt-leak"), Group: "g"})
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), bustest.NewEnvelope("l", 1, bustest.Ping{})); err != nil {
		t.Fatal(err)
	}
	rec.WaitFor(t, 1, 20*time.Second)
	if leaked() == "" {
		t.Fatal("the leak check sees no goroutine of an open bus")
	}
	start := time.Now()
	closeBus(t, b)
	t.Logf("Close took %v", time.Since(start))
	waitUntil(t, "no kafka goroutines", func() bool { return leaked() == "" })
}

// leaked returns the stacks of goroutines running code of this package or
// of kafka-go.
func leaked() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "segmentio/kafka-go") || strings.Contains(g, "bus/kafka.") && !strings.Contains(g, "leaked(") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
