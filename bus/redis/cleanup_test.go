package redis

import (
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource/bus/bustest"
)

// DeleteKeys deletes the keys of one prefix (the events stream and a
// group's streams) and no other prefix's.
func TestDeleteKeysOfOnePrefix(t *testing.T) {
	url := redisURL(t)
	gone, kept := prefix(), prefix()
	cleanupKeys(t, url, kept)
	cleanupKeys(t, url, gone) // in case the test fails before DeleteKeys
	var goneBus *Bus
	for _, p := range []string{gone, kept} {
		b := open(t, Config{URL: url, Registry: bustest.NewRegistry(), StreamPrefix: p, Group: "g"})
		if p == gone {
			goneBus = b
		}
		if _, err := b.Subscribe(bustest.Ping{}.EventType(), bustest.NewRecorder()); err != nil {
			t.Fatal(err)
		}
		bustest.Start(t, b)
		if err := b.Publish(t.Context(), bustest.NewEnvelope("a", 1, bustest.Ping{N: 1})); err != nil {
			t.Fatal(err)
		}
	}
	// Closed, so that it does not recreate its group's streams.
	if err := goneBus.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(opts)
	defer c.Close()
	count := func(p string) int {
		keys, err := c.Keys(t.Context(), KeyPattern(p)).Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(keys)
	}
	before := count(gone)
	if before == 0 || count(kept) == 0 {
		t.Fatalf("keys before: %d and %d, want some of each prefix", before, count(kept))
	}
	n, err := DeleteKeys(t.Context(), c, gone)
	if err != nil || n != before {
		t.Fatalf("DeleteKeys = %d, %v; want %d, nil", n, err, before)
	}
	if left := count(gone); left != 0 {
		t.Errorf("%d keys of the deleted prefix left", left)
	}
	if count(kept) == 0 {
		t.Errorf("the other prefix's keys were deleted too")
	}
}
