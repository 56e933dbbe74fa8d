package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource/eventstore"
)

// RunCheckpoints runs the CheckpointStore conformance suite. Checkpoint
// names are unique per subtest, so the store may be shared.
func RunCheckpoints(t *testing.T, newCheckpoints func(t *testing.T) eventstore.CheckpointStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, c eventstore.CheckpointStore)
	}{
		{"MissingIsZero", testCheckpointMissing},
		{"SaveAndOverwrite", testCheckpointSave},
		{"NamesAreIndependent", testCheckpointNames},
		{"NegativeRejected", testCheckpointNegative},
		{"CancelledContext", testCheckpointCancelled},
		{"Concurrent", testCheckpointConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newCheckpoints(t))
		})
	}
}

func checkpointName(suffix string) string {
	return "storetest-" + uuid.NewString() + suffix
}

func wantCheckpoint(t *testing.T, ctx context.Context, c eventstore.CheckpointStore, name string, want int64) {
	t.Helper()
	got, err := c.Checkpoint(ctx, name)
	if err != nil {
		t.Fatalf("Checkpoint(%q): %v", name, err)
	}
	if got != want {
		t.Fatalf("Checkpoint(%q) = %d, want %d", name, got, want)
	}
}

func mustSave(t *testing.T, ctx context.Context, c eventstore.CheckpointStore, name string, p int64) {
	t.Helper()
	if err := c.SaveCheckpoint(ctx, name, p); err != nil {
		t.Fatalf("SaveCheckpoint(%q, %d): %v", name, p, err)
	}
}

func testCheckpointMissing(t *testing.T, c eventstore.CheckpointStore) {
	wantCheckpoint(t, testContext(t), c, checkpointName(""), 0)
}

func testCheckpointSave(t *testing.T, c eventstore.CheckpointStore) {
	ctx := testContext(t)
	name := checkpointName("")
	for _, p := range []int64{42, 43, 7, 0, 1 << 62} {
		// Lower values are allowed: a rebuild starts over.
		mustSave(t, ctx, c, name, p)
		wantCheckpoint(t, ctx, c, name, p)
	}
}

func testCheckpointNames(t *testing.T, c eventstore.CheckpointStore) {
	ctx := testContext(t)
	base := checkpointName("")
	names := []string{base + "-a", base + "-b", base + "-A", base + " ünï/cødé 'q' \"d\"", base + strings.Repeat("x", 300)}
	for i, name := range names {
		mustSave(t, ctx, c, name, int64(i+1)*10)
	}
	for i, name := range names {
		wantCheckpoint(t, ctx, c, name, int64(i+1)*10)
	}
	wantCheckpoint(t, ctx, c, base, 0)
}

func testCheckpointNegative(t *testing.T, c eventstore.CheckpointStore) {
	ctx := testContext(t)
	name := checkpointName("")
	mustSave(t, ctx, c, name, 5)
	if err := c.SaveCheckpoint(ctx, name, -1); err == nil {
		t.Fatal("SaveCheckpoint(-1) succeeded, want an error")
	}
	wantCheckpoint(t, ctx, c, name, 5)
}

func testCheckpointCancelled(t *testing.T, c eventstore.CheckpointStore) {
	ctx := testContext(t)
	name := checkpointName("")
	mustSave(t, ctx, c, name, 3)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.SaveCheckpoint(cancelled, name, 4); !errors.Is(err, context.Canceled) {
		t.Fatalf("SaveCheckpoint with a cancelled context: err = %v, want context.Canceled", err)
	}
	if _, err := c.Checkpoint(cancelled, name); !errors.Is(err, context.Canceled) {
		t.Fatalf("Checkpoint with a cancelled context: err = %v, want context.Canceled", err)
	}
	wantCheckpoint(t, ctx, c, name, 3)
}

func testCheckpointConcurrent(t *testing.T, c eventstore.CheckpointStore) {
	ctx := testContext(t)
	base := checkpointName("")
	const workers, saves = 8, 50
	errs := make(chan error, workers*saves*2)
	var wg sync.WaitGroup
	for r := range workers {
		name := fmt.Sprintf("%s-%d", base, r)
		wg.Go(func() {
			last := int64(0)
			for p := int64(1); p <= saves; p++ {
				if err := c.SaveCheckpoint(ctx, name, p); err != nil {
					errs <- err
					return
				}
				got, err := c.Checkpoint(ctx, name)
				if err != nil {
					errs <- err
					return
				}
				// Only this goroutine writes name: reads see its own last save.
				if got != p || got < last {
					errs <- fmt.Errorf("%s: read %d after saving %d", name, got, p)
					return
				}
				last = got
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for r := range workers {
		wantCheckpoint(t, ctx, c, fmt.Sprintf("%s-%d", base, r), saves)
	}
}
