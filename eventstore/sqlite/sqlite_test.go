package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/eventstore/storetest"
)

func open(t testing.TB, path string, opts ...sqlite.Option) *sqlite.Store {
	t.Helper()
	opts = append([]sqlite.Option{sqlite.WithRegistry(storetest.NewRegistry())}, opts...)
	s, err := sqlite.Open(context.Background(), path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventstore.Store {
		return open(t, filepath.Join(t.TempDir(), "events.db"))
	})
}

// Small pages put page boundaries inside every read of the suite, and one
// file for all subtests checks that it tolerates other subtests' events.
func TestConformanceSharedSmallPages(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "events.db"), sqlite.WithPageSize(7), sqlite.WithSynchronousNormal())
	storetest.Run(t, func(t *testing.T) eventstore.Store { return s })
}

func TestCheckpointsConformance(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "events.db"))
	storetest.RunCheckpoints(t, func(t *testing.T) eventstore.CheckpointStore { return s })
}

func deposits(aggregateID string, n int) []eventsource.Envelope {
	out := make([]eventsource.Envelope, n)
	for i := range out {
		out[i] = eventsource.NewEnvelope(storetest.Deposited{Amount: i})
		out[i].AggregateType, out[i].AggregateID = "Account", aggregateID
	}
	return out
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	reg := storetest.NewRegistry()
	s, err := sqlite.Open(ctx, path, sqlite.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	want, err := s.Append(ctx, "Account-1", eventstore.NoStream, deposits("1", 3))
	if err != nil {
		t.Fatal(err)
	}
	md := eventsource.Metadata{CorrelationID: "c", Extra: map[string]string{"k": "v"}}
	more := deposits("2", 1)
	more[0].Metadata = md
	extra, err := s.Append(ctx, "Account-2", eventstore.NoStream, more)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, extra...)
	if err := s.SaveCheckpoint(ctx, "projector", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Open runs the schema statements again: they must leave the data alone.
	s = open(t, path)
	var got []eventsource.Envelope
	for env, err := range s.ReadAll(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, env)
	}
	if len(got) != len(want) {
		t.Fatalf("reopened store has %d events, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Position != w.Position || g.Version != w.Version || !g.OccurredAt.Equal(w.OccurredAt) ||
			g.Event != w.Event || g.Metadata.CorrelationID != w.Metadata.CorrelationID || g.Metadata.Extra["k"] != w.Metadata.Extra["k"] {
			t.Fatalf("event %d after reopen: %+v, want %+v", i, g, w)
		}
	}
	if p, err := s.Checkpoint(ctx, "projector"); err != nil || p != 3 {
		t.Fatalf("checkpoint after reopen = %d, %v; want 3", p, err)
	}
	// Numbering continues where it stopped.
	next, err := s.Append(ctx, "Account-1", 3, deposits("1", 1))
	if err != nil {
		t.Fatal(err)
	}
	if next[0].Version != 4 || next[0].Position != 5 {
		t.Fatalf("after reopen: Version %d, Position %d; want 4, 5", next[0].Version, next[0].Position)
	}
}

func TestOpenValidates(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	if _, err := sqlite.Open(ctx, filepath.Join(dir, "a.db")); err == nil {
		t.Error("Open without a registry succeeded")
	}
	reg := sqlite.WithRegistry(storetest.NewRegistry())
	for _, path := range []string{"", ":memory:", "file::memory:?cache=shared", filepath.Join(dir, "what?.db")} {
		if s, err := sqlite.Open(ctx, path, reg); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", path)
		}
	}
	if _, err := sqlite.Open(ctx, filepath.Join(dir, "b.db"), reg, sqlite.WithPageSize(0)); err == nil {
		t.Error("Open with page size 0 succeeded")
	}
	if _, err := sqlite.Open(ctx, filepath.Join(dir, "missing", "c.db"), reg); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}

// insertRaw writes a row behind the store's back, the way a bug, a manual
// edit or a newer release might.
func insertRaw(t *testing.T, path string, position int64, stream, eventID, typ, occurred string, metadata any, data string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = db.ExecContext(t.Context(), `INSERT INTO events
		(position, stream_id, version, event_id, type, aggregate_type, aggregate_id, occurred_at, metadata, data)
		VALUES (?, ?, 1, ?, ?, 'Account', 'x', ?, ?, ?)`,
		position, stream, eventID, typ, occurred, metadata, data)
	if err != nil {
		t.Fatal(err)
	}
}

func TestBadRowsAreTypedErrors(t *testing.T) {
	const (
		goodID   = "0190a0b0-0000-7000-8000-000000000001"
		goodTime = "2024-01-02T03:04:05.000000000Z"
	)
	for _, tc := range []struct {
		name                         string
		eventID, typ, occurred, data string
		metadata                     any
		want                         error
	}{
		{"unknown type", goodID, "nobody.Registered", goodTime, `{"amount":1}`, nil, eventsource.ErrUnknownEventType},
		{"malformed payload", goodID, "storetest.Deposited", goodTime, `{"amount":`, nil, eventsource.ErrMalformed},
		{"payload of the wrong shape", goodID, "storetest.Deposited", goodTime, `{"amount":"one"}`, nil, eventsource.ErrMalformed},
		{"malformed metadata", goodID, "storetest.Deposited", goodTime, `{"amount":1}`, `{"correlation_id":`, eventsource.ErrMalformed},
		{"malformed event ID", "not-a-uuid", "storetest.Deposited", goodTime, `{"amount":1}`, nil, eventsource.ErrMalformed},
		{"malformed time", goodID, "storetest.Deposited", "yesterday", `{"amount":1}`, nil, eventsource.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			path := filepath.Join(t.TempDir(), "events.db")
			s := open(t, path)
			good, err := s.Append(ctx, "Account-1", eventstore.NoStream, deposits("1", 2))
			if err != nil {
				t.Fatal(err)
			}
			insertRaw(t, path, 3, "Account-bad", tc.eventID, tc.typ, tc.occurred, tc.metadata, tc.data)

			for name, seq := range map[string]func(func(eventsource.Envelope, error) bool){
				"ReadAll": s.ReadAll(ctx, 1),
				"Load":    s.Load(ctx, "Account-bad", 1),
			} {
				var events []eventsource.Envelope
				var errs []error
				for env, err := range seq {
					if err != nil {
						errs = append(errs, err)
					} else {
						events = append(events, env)
					}
				}
				if len(errs) != 1 || !errors.Is(errs[0], tc.want) {
					t.Fatalf("%s: errors %v, want one matching %v", name, errs, tc.want)
				}
				var de *eventsource.DecodeError
				if !errors.As(errs[0], &de) {
					t.Fatalf("%s: error %v is not a *eventsource.DecodeError", name, errs[0])
				}
				// The good events before the bad row are yielded first.
				if name == "ReadAll" && (len(events) != 2 || events[0].ID != good[0].ID || events[1].ID != good[1].ID) {
					t.Fatalf("ReadAll yielded %d good events before the error, want 2", len(events))
				}
			}
			// The store still works after reading the bad row.
			if _, err := s.Append(ctx, "Account-1", 2, deposits("1", 1)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Two Store values on one file stand for two processes: their writers
// contend on the file lock. Appends must succeed or conflict, never fail
// with "database is locked".
func TestTwoWritersOnOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	a := open(t, path)
	b := open(t, path)
	storetest.RetryAppends(t, []eventstore.Store{a, b}, 300)

	// And on separate streams, many batches each.
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		s := []*sqlite.Store{a, b}[w%2]
		wg.Go(func() {
			stream := fmt.Sprintf("Account-w%d", w)
			for i := range 25 {
				if _, err := s.Append(ctx, stream, int64(i*4), deposits(stream, 4)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	next := int64(1)
	for env, err := range a.ReadAll(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if env.Position != next {
			t.Fatalf("position %d after %d", env.Position, next-1)
		}
		next++
	}
	if next-1 != 300+8*25*4 {
		t.Fatalf("%d events, want %d", next-1, 300+8*25*4)
	}
}

func BenchmarkAppendBatch100(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []sqlite.Option
	}{
		{"SynchronousFull", nil},
		{"SynchronousNormal", []sqlite.Option{sqlite.WithSynchronousNormal()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := open(b, filepath.Join(b.TempDir(), "events.db"), bc.opts...)
			ctx := context.Background()
			batch := deposits("1", 100)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := s.Append(ctx, fmt.Sprintf("Account-%d", i%16), eventstore.AnyVersion, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
		})
	}
}

func BenchmarkReadAll(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "events.db"), sqlite.WithSynchronousNormal())
	ctx := context.Background()
	for i := range 100 {
		if _, err := s.Append(ctx, fmt.Sprintf("Account-%d", i), eventstore.NoStream, deposits("1", 100)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for _, err := range s.ReadAll(ctx, 1) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

func TestSnapshotsConformance(t *testing.T) {
	storetest.RunSnapshots(t, func(t *testing.T) eventstore.SnapshotStore {
		return open(t, filepath.Join(t.TempDir(), "events.db"))
	})
}

// One file for all subtests, as the events share it.
func TestSnapshotsConformanceShared(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "events.db"), sqlite.WithSynchronousNormal())
	storetest.RunSnapshots(t, func(t *testing.T) eventstore.SnapshotStore { return s })
}

// A file written before snapshots existed gets the table when it is opened,
// and snapshots survive a reopen.
func TestSnapshotsTableAddedToOlderFile(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	reg := storetest.NewRegistry()
	s, err := sqlite.Open(ctx, path, sqlite.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "DROP TABLE snapshots"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	if s, err = sqlite.Open(ctx, path, sqlite.WithRegistry(reg)); err != nil {
		t.Fatal(err)
	}
	snap := eventstore.Snapshot{StreamID: "Account-1", AggregateType: "Account", AggregateID: "1",
		Version: 10, SchemaVersion: 2, Data: []byte(`{"balance":45}`)}
	if err := s.SaveSnapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	got, err := s.LoadSnapshot(ctx, "Account-1")
	if err != nil || got.Version != 10 || got.SchemaVersion != 2 || string(got.Data) != `{"balance":45}` {
		t.Fatalf("snapshot after reopen = %+v, %v", got, err)
	}
}

// Processes that start together open a new file at the same moment. Each
// must wait for the others (up to the busy timeout), never fail Open with
// "database is locked": SQLite does not call the busy handler for the
// switch to WAL mode.
func TestOpenANewFileConcurrently(t *testing.T) {
	const rounds, opens = 40, 6
	reg := storetest.NewRegistry()
	for round := range rounds {
		path := filepath.Join(t.TempDir(), "events.db")
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make(chan error, opens)
		)
		for i := range opens {
			wg.Go(func() {
				<-start // all at once: the race is in the first statements
				s, err := sqlite.Open(t.Context(), path, sqlite.WithRegistry(reg))
				if err != nil {
					errs <- fmt.Errorf("open %d: %w", i, err)
					return
				}
				defer s.Close()
				stream := fmt.Sprintf("Account-%d", i)
				if _, err := s.Append(t.Context(), stream, eventstore.NoStream, deposits(stream, 1)); err != nil {
					errs <- fmt.Errorf("append %d: %w", i, err)
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}
