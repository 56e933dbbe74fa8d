package redis

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

// A member restarted under a stable Consumer name picks up the entries it
// left pending at once, as Config.Consumer promises, not after ClaimIdle.
func TestStableNameSeesItsPendingEntriesAtOnce(t *testing.T) {
	url, p := redisURL(t), prefix()
	cleanupKeys(t, url, p)
	ctx := context.Background()
	reg := bustest.NewRegistry()
	pub := open(t, Config{URL: url, Registry: reg, StreamPrefix: p})
	defer closeBus(t, pub)
	if err := pub.Publish(ctx, bustest.NewEnvelope("a", 1, bustest.Ping{N: 1}), bustest.NewEnvelope("a", 2, bustest.Ping{N: 2})); err != nil {
		t.Fatal(err)
	}
	// The earlier process of member "m" read the entries and stopped.
	raw := pub.client
	if err := raw.XGroupCreateMkStream(ctx, pub.keys.events, "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "m", Streams: []string{pub.keys.events, ">"}}).Err(); err != nil {
		t.Fatal(err)
	}
	// ClaimIdle is a minute: only reading its own pending entries at
	// Start gets them handled within the wait below.
	b := open(t, Config{URL: url, Registry: reg, StreamPrefix: p, Group: "g", Consumer: "m", ClaimIdle: time.Minute})
	defer closeBus(t, b)
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	rec.WaitFor(t, 2, 10*time.Second)
	waitUntil(t, "entries acknowledged", func() bool {
		pend, err := raw.XPending(ctx, pub.keys.events, "g").Result()
		return err == nil && pend.Count == 0
	})
	if got := rec.Got(); got[0].Version != 1 || got[1].Version != 2 {
		t.Errorf("order %d, %d; want 1, 2", got[0].Version, got[1].Version)
	}
}

// An entry deleted from the stream while pending (XDEL, or trimmed by
// MaxLen) has nothing to deliver: whether a dead member or this member's
// earlier process left it, it leaves the pending list without a handler
// call or a dead letter, and the entries around it are delivered.
func TestPendingEntryDeletedFromStream(t *testing.T) {
	for _, owner := range []string{"dead", "m"} {
		t.Run(owner, func(t *testing.T) {
			url, p := redisURL(t), prefix()
			cleanupKeys(t, url, p)
			ctx := context.Background()
			reg := bustest.NewRegistry()
			b := open(t, Config{URL: url, Registry: reg, StreamPrefix: p, Group: "g", Consumer: "m",
				ClaimIdle: 200 * time.Millisecond, ClaimInterval: 50 * time.Millisecond})
			defer closeBus(t, b)
			if err := b.Publish(ctx, bustest.NewEnvelope("a", 1, bustest.Ping{N: 1}), bustest.NewEnvelope("a", 2, bustest.Ping{N: 2}), bustest.NewEnvelope("a", 3, bustest.Ping{N: 3})); err != nil {
				t.Fatal(err)
			}
			raw := b.client
			if err := raw.XGroupCreateMkStream(ctx, b.keys.events, "g", "0").Err(); err != nil {
				t.Fatal(err)
			}
			res, err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: owner, Streams: []string{b.keys.events, ">"}}).Result()
			if err != nil {
				t.Fatal(err)
			}
			if err := raw.XDel(ctx, b.keys.events, res[0].Messages[1].ID).Err(); err != nil {
				t.Fatal(err)
			}
			rec := bustest.NewRecorder()
			if _, err := b.SubscribeAll(rec); err != nil {
				t.Fatal(err)
			}
			bustest.Start(t, b)
			rec.WaitFor(t, 2, 10*time.Second)
			waitUntil(t, "nothing pending", func() bool {
				pend, err := raw.XPending(ctx, b.keys.events, "g").Result()
				return err == nil && pend.Count == 0
			})
			if n, _ := b.DeadLetters().Count(ctx); n != 0 || rec.Len() != 2 {
				t.Errorf("%d dead letters, %d handled; want 0, 2", n, rec.Len())
			}
		})
	}
}

// cut closes every connection through the proxy, both sides, at
// whatever point of a command or reply they are.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// A connection lost while a reply of XREADGROUP is on its way leaves the
// entries of that reply pending under this member, unseen. They must be
// delivered once the reader is back, before what follows them, not after
// ClaimIdle (a minute here) and behind their aggregates' later events.
func TestReaderConnectionLostMidReply(t *testing.T) {
	url, p := redisURL(t), prefix()
	purl, proxy := proxiedURL(t)
	cleanupKeys(t, url, p)
	ctx := context.Background()
	reg := bustest.NewRegistry()
	pub := open(t, Config{URL: url, Registry: reg, StreamPrefix: p})
	defer closeBus(t, pub)
	b := open(t, Config{URL: purl, Registry: reg, StreamPrefix: p, Group: "g", ClaimIdle: time.Minute, ReadCount: 7, Block: 50 * time.Millisecond})
	defer closeBus(t, b)
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	const aggs, per = 10, 300
	for i := range per {
		evs := make([]eventsource.Envelope, 0, aggs)
		for j := range aggs {
			evs = append(evs, bustest.NewEnvelope(fmt.Sprint("k", j), int64(i+1), bustest.Ping{N: i*aggs + j}))
		}
		if err := pub.Publish(ctx, evs...); err != nil {
			t.Fatal(err)
		}
	}
	distinct := func() int {
		ids := map[uuid.UUID]bool{}
		for _, env := range rec.Got() {
			ids[env.ID] = true
		}
		return len(ids)
	}
	deadline := time.Now().Add(15 * time.Second)
	for cuts := 0; distinct() < aggs*per; {
		if time.Now().After(deadline) {
			pend, _ := pub.client.XPending(ctx, b.keys.events, "g").Result()
			t.Fatalf("after %d cuts, %d of %d events handled; pending %+v", cuts, distinct(), aggs*per, pend)
		}
		if cuts < 300 {
			proxy.cut()
			cuts++
		}
		time.Sleep(3 * time.Millisecond) // pacing of the cuts, bounded by the deadline
	}
	last := map[string]int64{}
	for _, env := range rec.Got() {
		if env.Version < last[env.AggregateID] {
			t.Fatalf("%s: version %d after %d", env.AggregateID, env.Version, last[env.AggregateID])
		}
		last[env.AggregateID] = env.Version
	}
}
