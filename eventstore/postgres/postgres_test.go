package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
	"github.com/eventsource-go/eventsource/eventstore/storetest"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

const howTo = "set it to a PostgreSQL URL to run these tests, e.g. " +
	"EVENTSOURCE_POSTGRES_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'"

// newSchema creates a schema of its own for the calling test, dropped when
// the test ends, and returns its name.
func newSchema(t testing.TB) (url, schema string) {
	t.Helper()
	url = testenv.URL(t, "EVENTSOURCE_POSTGRES_URL", howTo)
	return url, testenv.PostgresSchema(t, url, "eventstore_test_")
}

// newPool opens a pool whose search_path is schema, closed when the test
// ends.
func newPool(t testing.TB, url, schema string) *pgxpool.Pool {
	return testenv.PostgresPool(t, url, schema)
}

// newStore returns a store in a fresh, migrated schema, and its pool.
func newStore(t testing.TB, opts ...postgres.Option) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	url, schema := newSchema(t)
	pool := newPool(t, url, schema)
	if err := postgres.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return postgres.New(pool, storetest.NewRegistry(), opts...), pool
}

func TestConformance(t *testing.T) {
	// All subtests share one schema, as tests share a real database.
	s, _ := newStore(t)
	storetest.Run(t, func(t *testing.T) eventstore.Store { return s })
}

func TestConformanceSmallPages(t *testing.T) {
	s, _ := newStore(t, postgres.WithPageSize(7))
	storetest.Run(t, func(t *testing.T) eventstore.Store { return s })
}

func TestCheckpointsConformance(t *testing.T) {
	s, _ := newStore(t)
	storetest.RunCheckpoints(t, func(t *testing.T) eventstore.CheckpointStore { return s })
}

// Two pools stand for two processes.
func TestConcurrentAppendsAcrossTwoPools(t *testing.T) {
	url, schema := newSchema(t)
	a, b := newPool(t, url, schema), newPool(t, url, schema)
	if err := postgres.Migrate(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	reg := storetest.NewRegistry()
	storetest.RetryAppends(t, []eventstore.Store{postgres.New(a, reg), postgres.New(b, reg)}, 1000)
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	url, schema := newSchema(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		pool := newPool(t, url, schema)
		wg.Go(func() { errs <- postgres.Migrate(t.Context(), pool) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	pool := newPool(t, url, schema)
	s := postgres.New(pool, storetest.NewRegistry())
	if _, err := s.Append(t.Context(), "Account-1", eventstore.NoStream, deposits("1", 3)); err != nil {
		t.Fatal(err)
	}
	// Migrating again keeps the events and the counter.
	if err := postgres.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	got, err := s.Append(t.Context(), "Account-1", 3, deposits("1", 1))
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Position != 4 || got[0].Version != 4 {
		t.Fatalf("after a second Migrate: Position %d, Version %d; want 4, 4", got[0].Position, got[0].Version)
	}
}

func deposits(aggregateID string, n int) []eventsource.Envelope {
	out := make([]eventsource.Envelope, n)
	for i := range out {
		out[i] = eventsource.NewEnvelope(storetest.Deposited{Amount: i})
		out[i].AggregateType, out[i].AggregateID = "Account", aggregateID
	}
	return out
}

// TestPositionsBecomeVisibleInOrder holds an append open on another
// connection and checks that a later append waits for it, so that a reader
// never sees a position before the ones below it are committed.
func TestPositionsBecomeVisibleInOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, pool := newStore(t)
	if _, err := s.Append(ctx, "Account-1", eventstore.NoStream, deposits("1", 1)); err != nil {
		t.Fatal(err)
	}

	// A slow writer, by hand: it has taken position 2 and not committed.
	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx) //nolint:errcheck
	var pos int64
	if err := slow.QueryRow(ctx, `UPDATE event_counter SET last = last + 1 RETURNING last`).Scan(&pos); err != nil {
		t.Fatal(err)
	}
	slowID := uuid.Must(uuid.NewV7())
	if _, err := slow.Exec(ctx, `INSERT INTO events
		(position, stream_id, version, event_id, type, aggregate_type, aggregate_id, occurred_at, data)
		VALUES ($1, 'Account-slow', 1, $2, 'storetest.Deposited', 'Account', 'slow', now(), '{"amount":7}')`,
		pos, [16]byte(slowID)); err != nil {
		t.Fatal(err)
	}

	type result struct {
		envs []eventsource.Envelope
		err  error
	}
	done := make(chan result, 1)
	go func() {
		envs, err := s.Append(ctx, "Account-2", eventstore.NoStream, deposits("2", 1))
		done <- result{envs, err}
	}()
	// Wait until the append is queued on the counter lock.
	for {
		var waiting int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE NOT l.granted AND a.query LIKE 'UPDATE event_counter%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("append finished while an earlier position was uncommitted: %+v, %v", r.envs, r.err)
		case <-ctx.Done():
			t.Fatal("the append never queued on the counter lock")
		default:
		}
	}
	// Neither the slow event nor the queued one is visible.
	for env, err := range s.ReadAll(ctx, 2) {
		t.Fatalf("ReadAll(2) yielded %+v, %v before position 2 committed", env, err)
	}

	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.envs[0].Position != pos+1 {
		t.Fatalf("queued append got position %d, want %d", r.envs[0].Position, pos+1)
	}
	var got []uuid.UUID
	for env, err := range s.ReadAll(ctx, 2) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, env.ID)
	}
	if len(got) != 2 || got[0] != slowID || got[1] != r.envs[0].ID {
		t.Fatalf("ReadAll(2) = %v, want [%v %v]", got, slowID, r.envs[0].ID)
	}
}

func TestBadRowsAreTypedErrors(t *testing.T) {
	for _, tc := range []struct {
		name, typ, metadata, data string
		want                      error
	}{
		{"unknown type", "nobody.Registered", "", `{"amount":1}`, eventsource.ErrUnknownEventType},
		{"payload of the wrong shape", "storetest.Deposited", "", `{"amount":"one"}`, eventsource.ErrMalformed},
		{"payload that is not an object", "storetest.Deposited", "", `[1, 2]`, eventsource.ErrMalformed},
		{"metadata of the wrong shape", "storetest.Deposited", `{"correlation_id": 5}`, `{"amount":1}`, eventsource.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s, pool := newStore(t)
			good, err := s.Append(ctx, "Account-1", eventstore.NoStream, deposits("1", 2))
			if err != nil {
				t.Fatal(err)
			}
			// Written behind the store's back, as a bug or a manual edit might.
			var metadata any
			if tc.metadata != "" {
				metadata = tc.metadata
			}
			_, err = pool.Exec(ctx, `WITH c AS (UPDATE event_counter SET last = last + 1 RETURNING last)
				INSERT INTO events (position, stream_id, version, event_id, type, aggregate_type, aggregate_id, occurred_at, metadata, data)
				SELECT c.last, 'Account-bad', 1, gen_random_uuid(), $1, 'Account', 'bad', now(), $2::jsonb, $3::jsonb FROM c`,
				tc.typ, metadata, tc.data)
			if err != nil {
				t.Fatal(err)
			}
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
				var de *eventsource.DecodeError
				if len(errs) != 1 || !errors.Is(errs[0], tc.want) || !errors.As(errs[0], &de) {
					t.Fatalf("%s: errors %v, want one *DecodeError matching %v", name, errs, tc.want)
				}
				if name == "ReadAll" && (len(events) != 2 || events[0].ID != good[0].ID || events[1].ID != good[1].ID) {
					t.Fatalf("ReadAll yielded %d good events before the error, want 2", len(events))
				}
			}
			if _, err := s.Append(ctx, "Account-1", 2, deposits("1", 1)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewPanicsWithoutRegistry(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New with a nil registry did not panic")
		}
	}()
	postgres.New(&pgxpool.Pool{}, nil)
}

func BenchmarkAppendBatch100(b *testing.B) {
	s, _ := newStore(b)
	ctx := context.Background()
	batch := deposits("1", 100)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Append(ctx, fmt.Sprintf("Account-%d", i%16), eventstore.AnyVersion, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkAppendBatch100Parallel(b *testing.B) {
	s, _ := newStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(2)
	b.RunParallel(func(pb *testing.PB) {
		stream := "Account-" + uuid.NewString()
		batch := deposits("1", 100)
		for pb.Next() {
			if _, err := s.Append(ctx, stream, eventstore.AnyVersion, batch); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkReadAll(b *testing.B) {
	s, _ := newStore(b)
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
	s, _ := newStore(t)
	storetest.RunSnapshots(t, func(t *testing.T) eventstore.SnapshotStore { return s })
}

// Saves and loads alternate between two pools, standing for two processes:
// the concurrent subtest races writers on different connections, and only
// the UPSERT keeps the newest snapshot.
func TestSnapshotsAcrossTwoPools(t *testing.T) {
	url, schema := newSchema(t)
	poolA, poolB := newPool(t, url, schema), newPool(t, url, schema)
	if err := postgres.Migrate(t.Context(), poolA); err != nil {
		t.Fatal(err)
	}
	reg := storetest.NewRegistry()
	both := &alternateSnapshots{stores: [2]eventstore.SnapshotStore{postgres.New(poolA, reg), postgres.New(poolB, reg)}}
	storetest.RunSnapshots(t, func(t *testing.T) eventstore.SnapshotStore { return both })
}

// alternateSnapshots sends each call to the next of two stores.
type alternateSnapshots struct {
	stores [2]eventstore.SnapshotStore
	calls  atomic.Uint64
}

func (s *alternateSnapshots) next() eventstore.SnapshotStore { return s.stores[s.calls.Add(1)%2] }

func (s *alternateSnapshots) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	return s.next().SaveSnapshot(ctx, snap)
}

func (s *alternateSnapshots) LoadSnapshot(ctx context.Context, streamID string) (eventstore.Snapshot, error) {
	return s.next().LoadSnapshot(ctx, streamID)
}
