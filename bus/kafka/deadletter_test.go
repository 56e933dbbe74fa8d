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

// TestDeadLetters runs the shared dead-letter suite. A record names its
// origin (topic, partition:offset) and is identified by the position of
// the message last consumed (here the retry topic's); retries go through
// the retry topics, so the failing group's bus reads the event once per
// attempt and once more replayed.
func TestDeadLetters(t *testing.T) {
	brokers(t)
	bustest.RunDeadLetters(t, bustest.DeadLetterOptions{
		Timeout: 30 * time.Second,
		Check: func(t *testing.T, r bustest.DeadLetterResult) {
			topic, rec := r.Config.Namespace, r.Record
			retry := Config{Topic: topic, Group: r.Config.Group}.WithDefaults().retryTopic()
			if rec.Source != topic || !strings.HasSuffix(rec.SourceID, ":0") || !strings.HasPrefix(rec.ID, retry+":") {
				t.Errorf("record ID %q, source %q, source ID %q; want %s:<partition>:<offset>, %q, partition:0", rec.ID, rec.Source, rec.SourceID,
					retry, topic)
			}
			if want := uint64(r.Config.MaxRetries + 1); r.Stats.Received != want {
				t.Errorf("Stats.Received = %d, want %d", r.Stats.Received, want)
			}
		},
		Inject: func(t *testing.T, cfg bustest.Config, body []byte, typeField, key string) {
			tr := &kafkago.Transport{}
			defer tr.CloseIdleConnections() // no kafka-go goroutine outlives the test
			w := &kafkago.Writer{Addr: kafkago.TCP(testConfig(t, Config{}).Brokers...), BatchBytes: 8 << 20, RequiredAcks: kafkago.RequireAll, Transport: tr}
			defer w.Close()
			err := w.WriteMessages(context.Background(), kafkago.Message{Topic: cfg.Namespace, Key: []byte(key), Value: body,
				Headers: []kafkago.Header{{Key: hdrEventType, Value: []byte(typeField)}, {Key: hdrAggregateID, Value: []byte(key)}}})
			if err != nil {
				t.Fatal(err)
			}
		},
		// Just under the broker's default limit (1,048,588 bytes): taken as
		// an event, refused as a dead letter with the framework's headers.
		Oversized: 1<<20 - 200,
	}, func(t *testing.T, cfg bustest.Config) bustest.DeadLetterBus {
		retry := fastRetry
		if cfg.MaxRetries > 0 {
			retry.MaxRetries = cfg.MaxRetries
		}
		return open(t, Config{Registry: cfg.Registry, Topic: cfg.Namespace, Group: cfg.Group, Retry: retry})
	})
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
	bustest.Start(t, b)
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
	bustest.Start(t, b)
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
	bustest.Start(t, b)
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
// of kafka-go, but the test's broker proxy.
func leaked() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "kafka.(*kafkaProxy)") {
			continue
		}
		if strings.Contains(g, "segmentio/kafka-go") || strings.Contains(g, "bus/kafka.") && !strings.Contains(g, "leaked(") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// A bus opened before its group's retry and dead-letter topics existed
// (an admin tool's, say, opened before the consumers' first Start) reads,
// removes and replays the group's dead letters as soon as the topics
// exist. kafka-go's Transport routes every request by a metadata cache
// that learns of a topic created elsewhere only at its next refresh, up
// to 6s later, and until then fails requests for it with
// UnknownTopicOrPartition.
func TestAdminOfABusOpenedBeforeItsTopics(t *testing.T) {
	topic := uniqueTopic("kt-admin")
	adm := open(t, Config{Topic: topic, Group: "g", Partitions: 1}) // never started: no retry or dead-letter topic yet
	defer closeBus(t, adm)
	b := open(t, Config{Topic: topic, Group: "g", Partitions: 1})
	defer closeBus(t, b)
	var failing atomic.Bool
	failing.Store(true)
	var handled atomic.Int32
	if _, err := b.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		if failing.Load() {
			return bus.Permanent(errors.New("not today"))
		}
		handled.Add(1)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if n, err := adm.DeadLetters().Count(ctx); !errors.Is(err, ErrMissingTopic) {
		t.Fatalf("Count before the dead-letter topic exists = %d, %v; want ErrMissingTopic", n, err)
	}
	bustest.Start(t, b) // creates the group's topics
	if n, err := adm.DeadLetters().Count(ctx); err != nil || n != 0 {
		t.Fatalf("Count right after the dead-letter topic was created = %d, %v; want 0, nil", n, err)
	}
	if err := b.Publish(ctx, bustest.NewEnvelope("a", 1, bustest.Ping{}), bustest.NewEnvelope("b", 1, bustest.Ping{})); err != nil {
		t.Fatal(err)
	}
	// The consuming bus's transport saw the topics it created; the other
	// must see the records at once.
	waitUntil(t, "2 dead letters", func() bool { n, _ := b.DeadLetters().Count(ctx); return n == 2 })
	recs, err := adm.DeadLetters().List(ctx, "", 10)
	if err != nil || len(recs) != 2 {
		t.Fatalf("List through the bus opened first = %d records, %v; want 2", len(recs), err)
	}
	ids := map[string]string{}
	for _, r := range recs {
		ids[r.AggregateID] = r.ID
	}
	if n, err := adm.RemoveDeadLetters(ctx, ids["a"], "no-such-id"); err != nil || n != 1 {
		t.Fatalf("RemoveDeadLetters(a, no-such-id) = %d, %v; want 1, nil", n, err)
	}
	failing.Store(false)
	if err := adm.DeadLetters().Replay(ctx, ids["b"]); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b handled after its replay", func() bool { return handled.Load() == 1 })
	if n, err := b.DeadLetters().Count(ctx); err != nil || n != 0 {
		t.Errorf("Count after the removal and the replay = %d, %v; want 0", n, err)
	}
}
