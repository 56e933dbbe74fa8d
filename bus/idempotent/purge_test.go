package idempotent_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource/bus/idempotent"
)

// TestPurgeDone: a purge deletes the keys of one handler done before the
// cutoff, in chunks, and nothing else: keys done later, keys still
// claimed, other handlers' keys. A duplicate of a purged event runs again.
func TestPurgeDone(t *testing.T) {
	h, other := "purge-"+uuid.NewString()[:8], "keep-"+uuid.NewString()[:8]
	for name, open := range stores(t, h, other) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			p := s.(idempotent.Purger)
			done := func(handler, id string) {
				t.Helper()
				if out, err := s.Claim(ctx, handler, id, time.Minute); err != nil || out != idempotent.Claimed {
					t.Fatalf("claim %s %s: %v, %v", handler, id, out, err)
				}
				if err := s.Complete(ctx, handler, id); err != nil {
					t.Fatal(err)
				}
			}
			const n = 2500 // more than one chunk
			for i := range n {
				done(h, strconv.Itoa(i))
			}
			done(other, "0")
			if out, err := s.Claim(ctx, h, "claimed", time.Minute); err != nil || out != idempotent.Claimed {
				t.Fatalf("claim: %v, %v", out, err)
			}
			if got, err := p.PurgeDone(ctx, h, time.Now().Add(-time.Hour)); err != nil || got != 0 {
				t.Fatalf("purge of keys done an hour ago = %d, %v; want 0", got, err)
			}
			if got, err := p.PurgeDone(ctx, h, time.Now().Add(time.Second)); err != nil || got != n {
				t.Fatalf("purge of every done key = %d, %v; want %d", got, err, n)
			}
			if out, _ := s.Claim(ctx, h, "0", time.Minute); out != idempotent.Claimed {
				t.Fatalf("a purged key claims as %v, want Claimed (its event runs again)", out)
			}
			if out, _ := s.Claim(ctx, h, "claimed", time.Minute); out != idempotent.Busy {
				t.Fatalf("a key still claimed is %v after the purge, want Busy", out)
			}
			if out, _ := s.Claim(ctx, other, "0", time.Minute); out != idempotent.Done {
				t.Fatalf("another handler's key is %v after the purge, want Done", out)
			}
		})
	}
}
