package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
)

// RunSnapshots runs the SnapshotStore conformance suite. newSnapshots is
// called once per subtest and may return a store that subtests share:
// every subtest uses streams of its own.
//
// Besides the interface's contract (a save replaces the stream's snapshot
// unless the stored one is at a later version, so a save at the same
// version replaces it; a missing one is eventsource.ErrNotFound), the suite
// requires that every field round-trips, TakenAt to the microsecond at
// least; that the store keeps no reference to the caller's Data; and that a
// cancelled context fails with the context's error.
func RunSnapshots(t *testing.T, newSnapshots func(t *testing.T) eventstore.SnapshotStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s eventstore.SnapshotStore)
	}{
		{"RoundTrip", testSnapshotRoundTrip},
		{"MissingIsNotFound", testSnapshotMissing},
		{"NewerReplacesOlder", testSnapshotNewer},
		{"OlderNeverReplacesNewer", testSnapshotOlder},
		{"SameVersionReplaces", testSnapshotSameVersion},
		{"StreamsAreIndependent", testSnapshotStreams},
		{"DataIsCopied", testSnapshotCopies},
		{"Concurrent", testSnapshotConcurrent},
		{"CancelledContext", testSnapshotCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newSnapshots(t))
		})
	}
}

// snapshotAt returns a snapshot of streamID at version whose Data names the
// version, so that a load shows whether fields of different saves were mixed.
func snapshotAt(streamID, aggregateID string, version int64) eventstore.Snapshot {
	return eventstore.Snapshot{
		StreamID:      streamID,
		AggregateType: "storetest",
		AggregateID:   aggregateID,
		Version:       version,
		SchemaVersion: 1,
		Data:          []byte(`{"version":` + strconv.FormatInt(version, 10) + `}`),
		TakenAt:       time.Unix(1_700_000_000, version*1000).UTC(),
	}
}

func mustSaveSnapshot(t *testing.T, ctx context.Context, s eventstore.SnapshotStore, snap eventstore.Snapshot) {
	t.Helper()
	if err := s.SaveSnapshot(ctx, snap); err != nil {
		t.Fatalf("SaveSnapshot(%q, version %d): %v", snap.StreamID, snap.Version, err)
	}
}

func mustLoadSnapshot(t *testing.T, ctx context.Context, s eventstore.SnapshotStore, streamID string) eventstore.Snapshot {
	t.Helper()
	snap, err := s.LoadSnapshot(ctx, streamID)
	if err != nil {
		t.Fatalf("LoadSnapshot(%q): %v", streamID, err)
	}
	return snap
}

// diffSnapshot describes how got differs from want, or returns "". Data is
// compared by content (nil and empty are equal) and TakenAt as an instant,
// either exact or truncated to the microsecond.
func diffSnapshot(got, want eventstore.Snapshot) string {
	switch {
	case got.StreamID != want.StreamID:
		return fmt.Sprintf("StreamID %q, want %q", got.StreamID, want.StreamID)
	case got.AggregateType != want.AggregateType:
		return fmt.Sprintf("AggregateType %q, want %q", got.AggregateType, want.AggregateType)
	case got.AggregateID != want.AggregateID:
		return fmt.Sprintf("AggregateID %q, want %q", got.AggregateID, want.AggregateID)
	case got.Version != want.Version:
		return fmt.Sprintf("Version %d, want %d", got.Version, want.Version)
	case got.SchemaVersion != want.SchemaVersion:
		return fmt.Sprintf("SchemaVersion %d, want %d", got.SchemaVersion, want.SchemaVersion)
	case !bytes.Equal(got.Data, want.Data):
		return fmt.Sprintf("Data %q, want %q", truncate(got.Data), truncate(want.Data))
	case !got.TakenAt.Equal(want.TakenAt) && !got.TakenAt.Equal(want.TakenAt.Truncate(time.Microsecond)):
		return fmt.Sprintf("TakenAt %v, want %v", got.TakenAt, want.TakenAt)
	}
	return ""
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func wantSnapshot(t *testing.T, ctx context.Context, s eventstore.SnapshotStore, want eventstore.Snapshot) {
	t.Helper()
	got := mustLoadSnapshot(t, ctx, s, want.StreamID)
	if d := diffSnapshot(got, want); d != "" {
		t.Fatalf("LoadSnapshot(%q): %s", want.StreamID, d)
	}
}

func testSnapshotRoundTrip(t *testing.T, s eventstore.SnapshotStore) {
	ctx := testContext(t)
	binary := make([]byte, 64<<10)
	for i := range binary {
		binary[i] = byte(i * 7) // every byte value, NULs and invalid UTF-8 included
	}
	cases := []struct {
		name string
		edit func(*eventstore.Snapshot)
	}{
		{"json", func(*eventstore.Snapshot) {}},
		{"binary", func(s *eventstore.Snapshot) { s.Data = binary }},
		{"empty", func(s *eventstore.Snapshot) { s.Data = nil }},
		{"fields", func(s *eventstore.Snapshot) {
			s.AggregateType, s.AggregateID = "Ünï 'q' \"d\"", "ïd/with spaces; DROP"
			s.Version, s.SchemaVersion = 1<<53, -3
			// Nanoseconds a store may drop, in a zone it may normalize.
			s.TakenAt = time.Date(2026, 11, 22, 11, 7, 3, 123456789, time.FixedZone("X", 5*3600+1800))
		}},
	}
	for _, c := range cases {
		streamID, aggregateID := newStream()
		snap := snapshotAt(streamID, aggregateID, 42)
		c.edit(&snap)
		mustSaveSnapshot(t, ctx, s, snap)
		got := mustLoadSnapshot(t, ctx, s, streamID)
		if d := diffSnapshot(got, snap); d != "" {
			t.Fatalf("%s: %s", c.name, d)
		}
		// Loading again gives the same instant: the store is not rounding
		// differently on each read.
		if again := mustLoadSnapshot(t, ctx, s, streamID); !again.TakenAt.Equal(got.TakenAt) {
			t.Fatalf("%s: TakenAt %v, then %v", c.name, got.TakenAt, again.TakenAt)
		}
	}
}

func testSnapshotMissing(t *testing.T, s eventstore.SnapshotStore) {
	ctx := testContext(t)
	streamID, _ := newStream()
	if _, err := s.LoadSnapshot(ctx, streamID); !errors.Is(err, eventsource.ErrNotFound) {
		t.Fatalf("LoadSnapshot of a stream without one: err = %v, want eventsource.ErrNotFound", err)
	}
}

func testSnapshotNewer(t *testing.T, s eventstore.SnapshotStore) {
	ctx := testContext(t)
	streamID, aggregateID := newStream()
	for _, v := range []int64{10, 11, 25, 1 << 40} {
		snap := snapshotAt(streamID, aggregateID, v)
		snap.SchemaVersion = int(v % 7) // a newer snapshot may change schema
		mustSaveSnapshot(t, ctx, s, snap)
		wantSnapshot(t, ctx, s, snap)
	}
}

func testSnapshotOlder(t *testing.T, s eventstore.SnapshotStore) {
	ctx := testContext(t)
	streamID, aggregateID := newStream()
	newest := snapshotAt(streamID, aggregateID, 50)
	mustSaveSnapshot(t, ctx, s, newest)
	for _, v := range []int64{49, 10, 1} {
		// A slow writer that loaded the aggregate earlier: its save
		// succeeds, and is ignored.
		old := snapshotAt(streamID, aggregateID, v)
		old.SchemaVersion = 9
		mustSaveSnapshot(t, ctx, s, old)
		wantSnapshot(t, ctx, s, newest)
	}
}

// A snapshot at the stored version replaces it: after an aggregate's
// snapshot schema changes, the new shape must be able to take over.
func testSnapshotSameVersion(t *testing.T, s eventstore.SnapshotStore) {
	ctx := testContext(t)
	streamID, aggregateID := newStream()
	first := snapshotAt(streamID, aggregateID, 20)
	first.SchemaVersion = 1
	mustSaveSnapshot(t, ctx, s, first)
	second := snapshotAt(streamID, aggregateID, 20)
	second.SchemaVersion = 2
	second.Data = []byte(`{"shape":2}`)
	mustSaveSnapshot(t, ctx, s, second)
	wantSnapshot(t, ctx, s, second)
}

func testSnapshotStreams(t *testing.T, s eventstore.SnapshotStore) {
	ctx := testContext(t)
	a, aID := newStream()
	b, bID := newStream()
	snapA := snapshotAt(a, aID, 30)
	snapB := snapshotAt(b, bID, 5)
	mustSaveSnapshot(t, ctx, s, snapA)
	mustSaveSnapshot(t, ctx, s, snapB) // lower than a's: must still be kept
	wantSnapshot(t, ctx, s, snapA)
	wantSnapshot(t, ctx, s, snapB)

	// Names that differ only in case or by a suffix are different streams.
	for _, other := range []string{a + "x", a[:len(a)-1], swapCase(a)} {
		if other == a {
			continue
		}
		if _, err := s.LoadSnapshot(ctx, other); !errors.Is(err, eventsource.ErrNotFound) {
			t.Fatalf("LoadSnapshot(%q) after saving %q: err = %v, want ErrNotFound", other, a, err)
		}
	}
}

func swapCase(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
	}
	return string(b)
}

func testSnapshotCopies(t *testing.T, s eventstore.SnapshotStore) {
	ctx := testContext(t)
	streamID, aggregateID := newStream()
	snap := snapshotAt(streamID, aggregateID, 7)
	want := snap
	want.Data = bytes.Clone(snap.Data)
	mustSaveSnapshot(t, ctx, s, snap)
	for i := range snap.Data {
		snap.Data[i] = 'X'
	}
	got := mustLoadSnapshot(t, ctx, s, streamID)
	if d := diffSnapshot(got, want); d != "" {
		t.Fatalf("after the caller changed its Data: %s", d)
	}
	// Nor is what a load returns shared with the store or a later load.
	for i := range got.Data {
		got.Data[i] = 'Y'
	}
	wantSnapshot(t, ctx, s, want)
}

func testSnapshotConcurrent(t *testing.T, s eventstore.SnapshotStore) {
	ctx := testContext(t)
	streamID, aggregateID := newStream()
	const writers, versions, readers = 8, 200, 2
	// Versions 1..versions dealt to the writers in random order, so that
	// older saves keep arriving after newer ones.
	order := rand.Perm(versions)
	errs := make(chan error, writers+readers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < versions; i += writers {
				if err := s.SaveSnapshot(ctx, snapshotAt(streamID, aggregateID, int64(order[i]+1))); err != nil {
					errs <- fmt.Errorf("SaveSnapshot: %w", err)
					return
				}
			}
		})
	}
	// Readers check that the stored version never goes back and that each
	// load is one save, not fields of several.
	done := make(chan struct{})
	var readersWG sync.WaitGroup
	for range readers {
		readersWG.Go(func() {
			var last int64
			for {
				select {
				case <-done:
					return
				default:
				}
				got, err := s.LoadSnapshot(ctx, streamID)
				if errors.Is(err, eventsource.ErrNotFound) && last == 0 {
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("LoadSnapshot: %w", err)
					return
				}
				if got.Version < last {
					errs <- fmt.Errorf("stored version went back from %d to %d", last, got.Version)
					return
				}
				if d := diffSnapshot(got, snapshotAt(streamID, aggregateID, got.Version)); d != "" {
					errs <- fmt.Errorf("load during saves: %s", d)
					return
				}
				last = got.Version
			}
		})
	}
	wg.Wait()
	close(done)
	readersWG.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wantSnapshot(t, ctx, s, snapshotAt(streamID, aggregateID, versions))
}

func testSnapshotCancelled(t *testing.T, s eventstore.SnapshotStore) {
	ctx := testContext(t)
	streamID, aggregateID := newStream()
	first := snapshotAt(streamID, aggregateID, 3)
	mustSaveSnapshot(t, ctx, s, first)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.SaveSnapshot(cancelled, snapshotAt(streamID, aggregateID, 4)); !errors.Is(err, context.Canceled) {
		t.Fatalf("SaveSnapshot with a cancelled context: err = %v, want context.Canceled", err)
	}
	if _, err := s.LoadSnapshot(cancelled, streamID); !errors.Is(err, context.Canceled) {
		t.Fatalf("LoadSnapshot with a cancelled context: err = %v, want context.Canceled", err)
	}
	wantSnapshot(t, ctx, s, first)
}
