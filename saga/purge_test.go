package saga_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/saga"
)

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

func purger(t *testing.T, s saga.Store) saga.Purger {
	t.Helper()
	p, ok := s.(saga.Purger)
	if !ok {
		t.Fatalf("%T does not implement saga.Purger", s)
	}
	return p
}

func mustSave(t *testing.T, s saga.Store, inst *saga.Instance) {
	t.Helper()
	if err := s.Save(context.Background(), inst); err != nil {
		t.Fatalf("save %s: %v", inst.ID, err)
	}
}

func mustLoad(t *testing.T, s saga.Store, sagaName, id string) saga.Instance {
	t.Helper()
	inst, err := s.Load(context.Background(), sagaName, id)
	if err != nil {
		t.Fatalf("load %s: %v", id, err)
	}
	return inst
}

func mustPurge(t *testing.T, p saga.Purger, sagaName string, before time.Time, want int64) {
	t.Helper()
	n, err := p.PurgeEnded(context.Background(), sagaName, before)
	if err != nil || n != want {
		t.Fatalf("PurgeEnded(%s, %s) = %d, %v; want %d", sagaName, before.Format(time.RFC3339Nano), n, err, want)
	}
}

// TestPurgeEnded: only ended instances of the saga that ended strictly
// before the cutoff go, with their deadlines; the count is exact; a
// re-save keeps the first end time; a second purge deletes nothing.
func TestPurgeEnded(t *testing.T) {
	name := uniqueName("purge")
	other := name + "-other"
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			store := b.open(t)
			p := purger(t, store)
			t.Cleanup(func() { _, _ = p.PurgeEnded(ctx, other, t0.Add(1000*time.Hour)) })

			old1 := &saga.Instance{Saga: name, ID: "old1", Ended: true, EndedAt: t0}
			// Ended instances have no deadlines, unless a Store user saved
			// one: it must go with the instance.
			old2 := &saga.Instance{Saga: name, ID: "old2", Ended: true, EndedAt: t0.Add(time.Millisecond),
				Deadlines: []saga.Deadline{{ID: name + "-old2-" + b.name, Name: "stale", Due: t0}}}
			recent := &saga.Instance{Saga: name, ID: "recent", Ended: true, EndedAt: t0.Add(time.Hour)}
			running := &saga.Instance{Saga: name, ID: "running",
				Deadlines: []saga.Deadline{{ID: name + "-running-" + b.name, Name: "expire", Due: t0}}}
			otherOld := &saga.Instance{Saga: other, ID: "old1", Ended: true, EndedAt: t0}
			for _, inst := range []*saga.Instance{old1, old2, recent, running, otherOld} {
				mustSave(t, store, inst)
			}
			if !running.EndedAt.IsZero() || !old2.EndedAt.Equal(t0.Add(time.Millisecond)) {
				t.Fatalf("after Save: running EndedAt %v, old2 EndedAt %v", running.EndedAt, old2.EndedAt)
			}

			// A re-save with a later end time keeps the first.
			old1.EndedAt = t0.Add(5 * time.Hour)
			mustSave(t, store, old1)
			if !old1.EndedAt.Equal(t0) {
				t.Fatalf("Save set EndedAt %v on a re-save, want the first, %v", old1.EndedAt, t0)
			}
			if got := mustLoad(t, store, name, "old1"); got.Version != 2 || !got.EndedAt.Equal(t0) {
				t.Fatalf("re-saved instance: version %d, EndedAt %v; want 2, %v", got.Version, got.EndedAt, t0)
			}

			mustPurge(t, p, name, t0, 0) // ended at the cutoff, not before it
			mustPurge(t, p, name, t0.Add(30*time.Minute), 2)
			for _, id := range []string{"old1", "old2"} {
				if got := mustLoad(t, store, name, id); got.Version != 0 {
					t.Fatalf("purged instance %s still loads at version %d", id, got.Version)
				}
			}
			if got := mustLoad(t, store, name, "recent"); got.Version != 1 || !got.Ended || !got.EndedAt.Equal(t0.Add(time.Hour)) {
				t.Fatalf("recent instance after purge: %+v", got)
			}
			if got := mustLoad(t, store, name, "running"); got.Version != 1 || got.Ended || !got.EndedAt.IsZero() {
				t.Fatalf("running instance after purge: %+v", got)
			}
			if got := mustLoad(t, store, other, "old1"); got.Version != 1 {
				t.Fatalf("another saga's instance was purged: %+v", got)
			}
			due, err := store.ClaimDue(ctx, name, t0.Add(1000*time.Hour), time.Minute, 10)
			if err != nil || len(due) != 1 || due[0].Instance != "running" {
				t.Fatalf("deadlines left after purge: %+v, %v; want only the running instance's", due, err)
			}

			mustPurge(t, p, name, t0.Add(30*time.Minute), 0)
			// A cutoff finer than a millisecond means the same on every
			// store: recent ended before recent.EndedAt + 1ns.
			mustPurge(t, p, name, t0.Add(time.Hour+time.Nanosecond), 1)
			mustPurge(t, p, other, t0.Add(time.Millisecond), 1)
		})
	}
}

// TestSaveStampsEndedAt: an instance saved as ended without an end time
// gets the time of the Save, to the millisecond, and Load returns it.
func TestSaveStampsEndedAt(t *testing.T) {
	name := uniqueName("stamp")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			store := b.open(t)
			inst := &saga.Instance{Saga: name, ID: "i"}
			mustSave(t, store, inst)
			inst.Ended = true
			before := time.Now().Truncate(time.Millisecond)
			mustSave(t, store, inst)
			after := time.Now()
			if inst.EndedAt.Before(before) || inst.EndedAt.After(after) || inst.EndedAt.Nanosecond()%int(time.Millisecond) != 0 {
				t.Fatalf("EndedAt %v, want a whole millisecond in [%v, %v]", inst.EndedAt, before, after)
			}
			if got := mustLoad(t, store, name, "i"); !got.EndedAt.Equal(inst.EndedAt) {
				t.Fatalf("Load EndedAt %v, Save set %v", got.EndedAt, inst.EndedAt)
			}
		})
	}
}

// TestPurgeEndedInChunks: a SQL store's transaction deletes at most a
// chunk, oldest first; a purge larger than a chunk loops until done and
// counts every instance of every chunk.
func TestPurgeEndedInChunks(t *testing.T) {
	name := uniqueName("chunks")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			store := b.open(t)
			saga.SetPurgeChunk(store, 2)
			const ended = 5
			for i := range ended {
				mustSave(t, store, &saga.Instance{Saga: name, ID: "ended-" + string(rune('a'+i)), Ended: true,
					EndedAt: t0.Add(time.Duration(i) * time.Second)})
			}
			mustSave(t, store, &saga.Instance{Saga: name, ID: "running"})
			p := purger(t, store)
			want := int64(ended)
			// One transaction deletes one chunk, the oldest instances.
			if n, ok, err := saga.PurgeOneChunk(context.Background(), store, name, t0.Add(time.Hour)); ok {
				if err != nil || n != 2 {
					t.Fatalf("one chunk of 2 deleted %d, %v", n, err)
				}
				if got := mustLoad(t, store, name, "ended-a"); got.Version != 0 {
					t.Fatalf("the oldest instance is not in the first chunk")
				}
				want -= n
			}
			mustPurge(t, p, name, t0.Add(time.Hour), want)
			for i := range ended {
				if got := mustLoad(t, store, name, "ended-"+string(rune('a'+i))); got.Version != 0 {
					t.Fatalf("instance %s survived the purge", got.ID)
				}
			}
			if got := mustLoad(t, store, name, "running"); got.Version != 1 {
				t.Fatalf("running instance purged")
			}
			mustPurge(t, p, name, t0.Add(time.Hour), 0)
		})
	}
}

// TestPurgeEndedRunner: the runner records the end on its clock; until the
// purge a redelivered starting event is a no-op, after it the event starts
// a new instance (the trade-off the package documents).
func TestPurgeEndedRunner(t *testing.T) {
	name := uniqueName("purgerun")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			clock := newFakeClock()
			store := b.open(t)
			rec := &recorder{}
			r := saga.NewRunner(newCaseSaga(name), store, rec, saga.WithClock(clock.Now))
			opened := env(Opened{Case: "c"})
			if err := r.Handle(ctx, opened); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Hour)
			if err := r.Handle(ctx, env(Closed{Case: "c"})); err != nil {
				t.Fatal(err)
			}
			endedAt := clock.Now()
			if got := mustLoad(t, store, name, "c"); !got.Ended || !got.EndedAt.Equal(endedAt) {
				t.Fatalf("ended instance: Ended %v, EndedAt %v; want the runner's clock, %v", got.Ended, got.EndedAt, endedAt)
			}
			clock.Advance(time.Hour)
			if err := r.Handle(ctx, opened); err != nil {
				t.Fatal(err)
			}
			if n := rec.count("Ping"); n != 1 {
				t.Fatalf("%d Pings after a redelivery to the ended instance, want 1", n)
			}

			p := purger(t, store)
			mustPurge(t, p, name, endedAt, 0)
			mustPurge(t, p, name, endedAt.Add(time.Millisecond), 1)
			if err := r.Handle(ctx, opened); err != nil {
				t.Fatal(err)
			}
			if got := mustLoad(t, store, name, "c"); rec.count("Ping") != 2 || got.Version == 0 || got.Ended {
				t.Fatalf("after the purge, the redelivered start gave %d Pings and %+v; want a new instance", rec.count("Ping"), got)
			}
		})
	}
}

// The tables as releases before ended_at created them.
const (
	oldSQLiteSchema = `
CREATE TABLE saga_instances (
	saga    TEXT    NOT NULL,
	id      TEXT    NOT NULL,
	version INTEGER NOT NULL,
	doc     BLOB    NOT NULL,
	PRIMARY KEY (saga, id)
) STRICT;
CREATE TABLE saga_deadlines (
	id               TEXT    PRIMARY KEY,
	saga             TEXT    NOT NULL,
	instance_id      TEXT    NOT NULL,
	name             TEXT    NOT NULL,
	due_ms           INTEGER NOT NULL,
	claimed_until_ms INTEGER NOT NULL DEFAULT 0
) STRICT;`
	oldPostgresSchema = `
CREATE TABLE saga_instances (
	saga    TEXT   NOT NULL,
	id      TEXT   NOT NULL,
	version BIGINT NOT NULL,
	doc     BYTEA  NOT NULL,
	PRIMARY KEY (saga, id)
);
CREATE TABLE saga_deadlines (
	id               TEXT   PRIMARY KEY,
	saga             TEXT   NOT NULL,
	instance_id      TEXT   NOT NULL,
	name             TEXT   NOT NULL,
	due_ms           BIGINT NOT NULL,
	claimed_until_ms BIGINT NOT NULL DEFAULT 0
);`
)

// oldRows are instances an older release stored: one ended, one running
// whose state holds an "ended" of its own, which is not the instance's.
var oldRows = [][3]any{
	{"ended", 3, []byte(`{"state":{"n":1},"ended":true}`)},
	{"running", 2, []byte(`{"state":{"ended":true}}`)},
}

// TestMigrationAddsEndedAt: opening a store on tables without ended_at
// adds it; an instance that ended before counts as ended at the
// migration, a running one has none; opening again changes nothing.
func TestMigrationAddsEndedAt(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		ctx := context.Background()
		path := filepath.Join(t.TempDir(), "old.db")
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, oldSQLiteSchema); err != nil {
			t.Fatal(err)
		}
		for _, r := range oldRows {
			if _, err := db.ExecContext(ctx, `INSERT INTO saga_instances VALUES ('m', ?, ?, ?)`, r[0], r[1], r[2]); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		checkMigration(t, 0, func(t *testing.T) saga.Store {
			s, err := saga.OpenSQLite(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
	t.Run("postgres", func(t *testing.T) {
		ctx := context.Background()
		pool := postgresSchemaPool(t)
		if _, err := pool.Exec(ctx, oldPostgresSchema); err != nil {
			t.Fatal(err)
		}
		for _, r := range oldRows {
			if _, err := pool.Exec(ctx, `INSERT INTO saga_instances VALUES ('m', $1, $2, $3)`, r[0], r[1], r[2]); err != nil {
				t.Fatal(err)
			}
		}
		// The backfill is on the database's clock, not the test's.
		checkMigration(t, time.Second, func(t *testing.T) saga.Store {
			s, err := saga.NewPostgresStore(ctx, pool)
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
}

func checkMigration(t *testing.T, skew time.Duration, open func(*testing.T) saga.Store) {
	t.Helper()
	before := time.Now().Truncate(time.Millisecond).Add(-skew)
	store := open(t)
	after := time.Now().Add(skew)
	ended := mustLoad(t, store, "m", "ended")
	if !ended.Ended || ended.Version != 3 || ended.EndedAt.Before(before) || ended.EndedAt.After(after) {
		t.Fatalf("instance ended before the migration: %+v, want EndedAt in [%v, %v]", ended, before, after)
	}
	if running := mustLoad(t, store, "m", "running"); running.Ended || !running.EndedAt.IsZero() || running.Version != 2 {
		t.Fatalf("running instance after the migration: %+v", running)
	}

	store = open(t) // a second start: the migration is idempotent
	if again := mustLoad(t, store, "m", "ended"); !again.EndedAt.Equal(ended.EndedAt) {
		t.Fatalf("a second open moved EndedAt from %v to %v", ended.EndedAt, again.EndedAt)
	}
	p := purger(t, store)
	mustPurge(t, p, "m", ended.EndedAt, 0)
	mustPurge(t, p, "m", ended.EndedAt.Add(time.Millisecond), 1)
	mustPurge(t, p, "m", ended.EndedAt.Add(time.Millisecond), 0)
	if running := mustLoad(t, store, "m", "running"); running.Version != 2 {
		t.Fatalf("running instance purged: %+v", running)
	}
	// The migrated table works for new instances as well.
	inst := &saga.Instance{Saga: "m", ID: "new", Ended: true, EndedAt: t0}
	mustSave(t, store, inst)
	mustPurge(t, p, "m", t0.Add(time.Millisecond), 1)
}

// postgresSchemaPool returns a pool on a schema of the test's own,
// dropped when it ends, for tables a test creates by hand.
func postgresSchemaPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := testenv.URL(t, "EVENTSOURCE_POSTGRES_URL", "set it to a PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	return testenv.PostgresPool(t, url, testenv.PostgresSchema(t, url, "saga_test_"))
}
