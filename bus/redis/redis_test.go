package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

const howToEnable = "start Redis and set EVENTSOURCE_REDIS_URL=redis://127.0.0.1:6379/0 to run the Redis bus tests"

func redisURL(t testing.TB) string {
	return testenv.URL(t, "EVENTSOURCE_REDIS_URL", howToEnable)
}

// fastRetry keeps retrying tests short.
var fastRetry = consumer.RetryPolicy{MaxRetries: 3, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Multiplier: 2}

// cleanupKeys deletes every key of prefix when the test ends (after the
// buses it opened are closed: cleanups run last-registered first).
func cleanupKeys(t testing.TB, url, prefix string) {
	t.Helper()
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c := goredis.NewClient(opts)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := DeleteKeys(ctx, c, prefix); err != nil {
			t.Errorf("deleting keys of %s: %v", prefix, err)
		}
	})
}

func open(t testing.TB, cfg Config) *Bus {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = redisURL(t)
	}
	if cfg.Retry == (consumer.RetryPolicy{}) {
		cfg.Retry = fastRetry
	}
	if cfg.Block == 0 {
		cfg.Block = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	url := redisURL(t)
	bustest.Run(t, bustest.Features{ConsumerGroups: true, OrderingPerAggregate: true, Persistence: true},
		func(t *testing.T, cfg bustest.Config) bus.Bus {
			cleanupKeys(t, url, cfg.Namespace)
			return open(t, Config{URL: url, Registry: cfg.Registry, StreamPrefix: cfg.Namespace, Group: cfg.Group})
		})
}

func prefix() string { return "rt" + uuid.NewString()[:8] }

func closeBus(t testing.TB, b *Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func TestConfigValidateRedactsPassword(t *testing.T) {
	cfg := Config{URL: "redis://user:s3cret@localhost:6379/0"}.WithDefaults()
	err := cfg.Validate() // no Registry
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
	}
	for _, bad := range []string{"redis://user:s3cret@local host:6379", "http://user:s3cret@localhost", "redis://user:s3cret@localhost:6379/notadb"} {
		err := Config{URL: bad, Registry: eventsource.NewRegistry()}.WithDefaults().Validate()
		if err == nil {
			t.Errorf("%s validated", strings.ReplaceAll(bad, "s3cret", "…"))
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
	if got := cfg.RedactedURL(); strings.Contains(got, "s3cret") || !strings.Contains(got, "localhost:6379") {
		t.Errorf("RedactedURL = %q", got)
	}
	bad := Config{URL: "redis://localhost", Registry: eventsource.NewRegistry(), ClaimIdle: time.Second,
		Retry: consumer.RetryPolicy{MaxRetries: 10, InitialBackoff: time.Second, MaxBackoff: time.Second, Multiplier: 1}}.WithDefaults()
	if err := bad.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "ClaimIdle") {
		t.Errorf("ClaimIdle shorter than the backoff: %v", err)
	}
	def := Config{URL: "redis://localhost", Registry: eventsource.NewRegistry()}.WithDefaults()
	if err := def.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	other := Config{}.WithDefaults()
	if def.Consumer == other.Consumer {
		t.Errorf("two configs got the same consumer name %q", def.Consumer)
	}
	ctx := context.Background()
	if _, err := New(ctx, Config{URL: "redis://user:s3cret@127.0.0.1:1/0", Registry: eventsource.NewRegistry()}); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("New against a closed port = %v; want an error without the password", err)
	}
}

// TestDeadLetters runs the shared dead-letter suite. Retries happen in
// process, so the failing group's bus reads the event twice: once
// published, once replayed.
func TestDeadLetters(t *testing.T) {
	url := redisURL(t)
	bustest.RunDeadLetters(t, bustest.DeadLetterOptions{
		Check: func(t *testing.T, r bustest.DeadLetterResult) {
			if src := r.Bus.(*Bus).keys.events; r.Record.Source != src || r.Record.SourceID == "" {
				t.Errorf("record source %q, ID %q; want %q and the entry ID", r.Record.Source, r.Record.SourceID, src)
			}
			if want := uint64(2); r.Stats.Received != want {
				t.Errorf("Stats.Received = %d, want %d", r.Stats.Received, want)
			}
		},
		Inject: func(t *testing.T, cfg bustest.Config, body []byte, typeField, key string) {
			opts, err := goredis.ParseURL(url)
			if err != nil {
				t.Fatal(err)
			}
			c := goredis.NewClient(opts)
			defer c.Close()
			err = c.XAdd(context.Background(), &goredis.XAddArgs{Stream: keysFor(cfg.Namespace, cfg.Group).events,
				Values: []any{fieldType, typeField, fieldAggID, key, fieldEnvelope, body}}).Err()
			if err != nil {
				t.Fatal(err)
			}
		},
	}, func(t *testing.T, cfg bustest.Config) bustest.DeadLetterBus {
		cleanupKeys(t, url, cfg.Namespace)
		retry := fastRetry
		if cfg.MaxRetries > 0 {
			retry.MaxRetries = cfg.MaxRetries
		}
		return open(t, Config{URL: url, Registry: cfg.Registry, StreamPrefix: cfg.Namespace, Group: cfg.Group, Retry: retry})
	})
}

// Entries another member left pending are claimed after ClaimIdle with
// their delivery count.
func TestClaimsPendingEntriesOfAStoppedMember(t *testing.T) {
	url, p := redisURL(t), prefix()
	cleanupKeys(t, url, p)
	ctx := context.Background()
	reg := bustest.NewRegistry()
	pub := open(t, Config{URL: url, Registry: reg, StreamPrefix: p})
	defer closeBus(t, pub)
	var events []eventsource.Envelope
	for i := range 20 {
		events = append(events, bustest.NewEnvelope(fmt.Sprint("c", i%3), int64(i/3+1), bustest.Ping{N: i}))
	}
	if err := pub.Publish(ctx, events...); err != nil {
		t.Fatal(err)
	}
	// A member that read the entries and died before acking them.
	raw := pub.client
	if err := raw.XGroupCreateMkStream(ctx, pub.keys.events, "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "dead", Streams: []string{pub.keys.events, ">"}, Count: 100}).Err(); err != nil {
		t.Fatal(err)
	}
	survivor := open(t, Config{URL: url, Registry: reg, StreamPrefix: p, Group: "g",
		ClaimIdle: 300 * time.Millisecond, ClaimInterval: 50 * time.Millisecond,
		Retry: consumer.RetryPolicy{MaxRetries: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1}})
	rec := bustest.NewRecorder()
	if _, err := survivor.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, survivor)
	rec.WaitFor(t, len(events), 15*time.Second)
	closeBus(t, survivor)
	if got := rec.Len(); got != len(events) {
		t.Errorf("handled %d, want %d", got, len(events))
	}
	if st := survivor.Stats(); st.Reclaimed != uint64(len(events)) || st.Handled != uint64(len(events)) {
		t.Errorf("reclaimed %d handled %d", st.Reclaimed, st.Handled)
	}
	pending, err := raw.XPending(ctx, pub.keys.events, "g").Result()
	if err != nil || pending.Count != 0 {
		t.Errorf("pending after claim: %+v, %v", pending, err)
	}
}

// An entry delivered MaxRetries times already (its consumers kept dying)
// is dead-lettered on its next claim without running handlers.
func TestPoisonEntryDeadLetteredByDeliveryCount(t *testing.T) {
	url, p := redisURL(t), prefix()
	cleanupKeys(t, url, p)
	ctx := context.Background()
	reg := bustest.NewRegistry()
	b := open(t, Config{URL: url, Registry: reg, StreamPrefix: p, Group: "g",
		ClaimIdle: 200 * time.Millisecond, ClaimInterval: 50 * time.Millisecond,
		Retry: consumer.RetryPolicy{MaxRetries: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1}})
	defer closeBus(t, b)
	if err := b.Publish(ctx, bustest.NewEnvelope("poison", 1, bustest.Ping{})); err != nil {
		t.Fatal(err)
	}
	raw := b.client
	if err := raw.XGroupCreateMkStream(ctx, b.keys.events, "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// Two consumers got it and died: one read it, the other claimed it.
	msgs, err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "dead0", Streams: []string{b.keys.events, ">"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.XClaim(ctx, &goredis.XClaimArgs{Stream: b.keys.events, Group: "g", Consumer: "dead1", Messages: []string{msgs[0].Messages[0].ID}}).Err(); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	if _, err := b.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { calls.Add(1); return nil })); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	admin := b.DeadLetters()
	waitUntil(t, "dead letter", func() bool { n, _ := admin.Count(ctx); return n == 1 })
	recs, _ := admin.List(ctx, "", 1)
	if calls.Load() != 0 || recs[0].Reason != consumer.ReasonMaxRetries || recs[0].Attempts != 2 {
		t.Errorf("calls %d, record %+v", calls.Load(), recs[0])
	}
}

func TestCloseIsPrompt(t *testing.T) {
	url, p := redisURL(t), prefix()
	cleanupKeys(t, url, p)
	b := open(t, Config{URL: url, Registry: bustest.NewRegistry(), StreamPrefix: p, Block: time.Minute})
	if _, err := b.SubscribeAll(bustest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	waitUntil(t, "reader connected", func() bool { return b.readerID.Load() != 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Block is a minute: returning before ctx ends shows CLIENT UNBLOCK woke the reader.
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// With nothing pending, the member leaves its group.
	opts, _ := goredis.ParseURL(url)
	raw := goredis.NewClient(opts)
	defer raw.Close()
	consumers, err := raw.XInfoConsumers(ctx, b.keys.events, b.cfg.Group).Result()
	if err != nil || len(consumers) != 0 {
		t.Errorf("consumers after Close: %v, %v", consumers, err)
	}
}

func TestPublishMaxLenTrims(t *testing.T) {
	url, p := redisURL(t), prefix()
	cleanupKeys(t, url, p)
	b := open(t, Config{URL: url, Registry: bustest.NewRegistry(), StreamPrefix: p, MaxLen: 100})
	defer closeBus(t, b)
	ctx := context.Background()
	for i := range 20 {
		var batch []eventsource.Envelope
		for j := range 100 {
			batch = append(batch, bustest.NewEnvelope("t", int64(i*100+j+1), bustest.Ping{}))
		}
		if err := b.Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	n, err := b.client.XLen(ctx, b.keys.events).Result()
	if err != nil || n >= 2000 {
		t.Errorf("XLEN = %d, %v; want trimmed below 2000", n, err)
	}
	if st := b.Stats(); st.Published != 2000 {
		t.Errorf("published %d", st.Published)
	}
}

// A member never takes back what it is still handling, and keeps it from
// other members for as long as its handler runs: a handler five times
// longer than ClaimIdle runs once, on the member that read the entry.
func TestLongHandlerKeepsItsEntry(t *testing.T) {
	url, p := redisURL(t), prefix()
	cleanupKeys(t, url, p)
	reg := bustest.NewRegistry()
	cfg := Config{URL: url, Registry: reg, StreamPrefix: p, Group: "g",
		ClaimIdle: 300 * time.Millisecond, ClaimInterval: 50 * time.Millisecond,
		Retry: consumer.RetryPolicy{MaxRetries: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1}}
	var runs, peerRuns atomic.Int32
	started := make(chan struct{}, 1)
	slow := bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
		runs.Add(1)
		started <- struct{}{}
		select {
		case <-time.After(1500 * time.Millisecond): // the slow work itself, not a wait for a condition
		case <-ctx.Done():
		}
		return nil
	})
	a := open(t, cfg)
	defer closeBus(t, a)
	if _, err := a.SubscribeAll(slow); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, a)
	if err := a.Publish(context.Background(), bustest.NewEnvelope("slow", 1, bustest.Ping{})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(15 * time.Second):
		t.Fatal("handler never started")
	}
	peer := open(t, cfg)
	defer closeBus(t, peer)
	if _, err := peer.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { peerRuns.Add(1); return nil })); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, peer)
	waitUntil(t, "the entry acknowledged", func() bool { return a.Stats().Handled == 1 })
	closeBus(t, a)
	closeBus(t, peer)
	if runs.Load() != 1 || peerRuns.Load() != 0 {
		t.Errorf("the slow handler ran %d times, the peer's %d; want 1, 0", runs.Load(), peerRuns.Load())
	}
	for _, st := range []bus.Stats{a.Stats(), peer.Stats()} {
		if st.Reclaimed != 0 || st.DeadLettered != 0 {
			t.Errorf("stats %+v: nothing should be reclaimed or dead-lettered", st)
		}
	}
}
