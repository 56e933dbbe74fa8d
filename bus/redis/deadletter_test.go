package redis

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// A record stored without its envelope has nothing to deliver: Replay
// refuses it with consumer.ErrBodyDropped and leaves it, and ReplayAll,
// paging through more records than one XRANGE returns, replays the others
// and leaves it, without going round again on what it left. (Redis takes
// records up to 512 MB, so the shared suite cannot make one: it is written
// here as the settler writes it.)
func TestReplayLeavesDroppedBody(t *testing.T) {
	url := redisURL(t)
	p := prefix()
	cleanupKeys(t, url, p)
	retry := fastRetry
	retry.MaxRetries = 1
	b := open(t, Config{URL: url, Registry: bustest.NewRegistry(), StreamPrefix: p, Group: "g", Retry: retry})
	defer closeBus(t, b)
	var broken atomic.Bool
	broken.Store(true)
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
		if broken.Load() {
			return errors.New("down")
		}
		return rec.Handle(ctx, env)
	})); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second) // a ReplayAll that spins fails, not hangs
	defer cancel()
	admin := b.DeadLetters()
	writeDropped := func(id string) {
		t.Helper()
		err := settler{b}.DeadLetter(ctx, consumer.Message{Source: b.keys.events, ID: "0-1"}, consumer.DeadLetter{
			Reason: consumer.ReasonMalformed, Group: "g", Time: time.Now(),
			Source: b.keys.events, SourceID: id, BodyDropped: true, Size: 600 << 20,
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	const events = 150 // more than one page of ReplayAll
	writeDropped("1-1")
	var envs []eventsource.Envelope
	for i := range events {
		envs = append(envs, bustest.NewEnvelope(fmt.Sprint("agg-", i), 1, bustest.Ping{N: i}))
	}
	if err := b.Publish(ctx, envs...); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the events dead-lettered", func() bool { n, _ := admin.Count(ctx); return n == events+1 })
	writeDropped("1-2")
	recs, err := admin.List(ctx, "", 1000)
	if err != nil || len(recs) != events+2 {
		t.Fatalf("List = %d records, %v; want %d", len(recs), err, events+2)
	}
	first, last := recs[0], recs[len(recs)-1]
	if !first.BodyDropped || !last.BodyDropped || first.Size != 600<<20 || first.SourceID != "1-1" {
		t.Fatalf("records written without their body read back as %+v and %+v", first, last)
	}

	if err := admin.Replay(ctx, first.ID); !errors.Is(err, consumer.ErrBodyDropped) {
		t.Errorf("Replay of a record without its body = %v, want an error matching ErrBodyDropped", err)
	}
	if n, err := admin.Count(ctx); err != nil || n != events+2 {
		t.Errorf("Count after Replay of a record without its body = %d, %v; want %d", n, err, events+2)
	}
	broken.Store(false)
	if n, err := admin.ReplayAll(ctx); err != nil || n != events {
		t.Fatalf("ReplayAll = %d, %v; want %d", n, err, events)
	}
	rec.WaitFor(t, events, 15*time.Second)
	left, err := admin.List(ctx, "", 10)
	if err != nil || len(left) != 2 || left[0].ID != first.ID || left[1].ID != last.ID {
		t.Errorf("List after ReplayAll = %+v, %v; want the two records without their body", left, err)
	}
}
