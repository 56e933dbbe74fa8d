package storetest

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/eventstore"
)

// nestDepth is how deep testNestedReads nests reads: more than a store's
// read pool has connections, so a read that held one while its caller's
// loop body ran would deadlock.
const nestDepth = 8

// testNestedReads reads inside the loop body of a read, nestDepth deep,
// each level long enough to span pages at a small page size, and appends
// at every level: every read yields exactly what it began with.
func testNestedReads(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	in := mustAppend(t, ctx, s, stream, eventstore.NoStream, deposits(agg, 0, 30))
	sink, sinkAgg := newStream()
	var nest func(level int) int
	nest = func(level int) int {
		if level == nestDepth {
			return 0
		}
		read := s.Load(ctx, stream, 1)
		if level%2 == 1 {
			read = s.ReadAll(ctx, in[0].Position)
		}
		n, inner := 0, 0
		for env, err := range read {
			if err != nil {
				t.Fatalf("level %d: %v after %d events", level, err, n)
			}
			if env.AggregateID != agg {
				continue // ReadAll: other tests' events
			}
			n++
			if n == 20 { // past the first pages
				mustAppend(t, ctx, s, sink, eventstore.AnyVersion, deposits(sinkAgg, level, 1))
				inner = nest(level + 1)
			}
		}
		if n != len(in) {
			t.Fatalf("level %d yielded %d of the stream's %d events", level, n, len(in))
		}
		return inner + 1
	}
	if got := nest(0); got != nestDepth {
		t.Fatalf("%d levels ran, want %d", got, nestDepth)
	}
	wantLen(t, ctx, s, sink, nestDepth)
}

// testEarlyBreakLeavesNoGoroutine stops reads of many pages early, in the
// middle of a page and at a page's end: once they return, the store runs
// no goroutine for them.
func testEarlyBreakLeavesNoGoroutine(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	in := mustAppend(t, ctx, s, stream, eventstore.NoStream, deposits(agg, 0, 3000))
	before := runtime.NumGoroutine()
	for _, stopAt := range []int{1, 7, 8, 999, 1000, 1001, 2500} {
		for name, read := range map[string]seq{
			"Load":    s.Load(ctx, stream, 1),
			"ReadAll": s.ReadAll(ctx, in[0].Position),
		} {
			n := 0
			for _, err := range read {
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if n++; n == stopAt {
					break
				}
			}
		}
	}
	// Goroutines end a little after they say so; wait with a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the reads returned, %d before:\n%s",
				runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		select {
		case <-ctx.Done():
			t.Fatal(context.Cause(ctx))
		case <-time.After(10 * time.Millisecond): // polling, bounded by the deadline
		}
	}
}
