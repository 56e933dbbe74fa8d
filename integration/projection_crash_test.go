package integration

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/projection"
)

func init() {
	helpers["projection-sql"] = projectionSQLHelper
}

// projLeaseTTL is the failover test's lease: short, for a quick takeover,
// yet long enough that a holder starved of CPU by the race detector on a
// loaded CI machine rarely misses a renewal.
const projLeaseTTL = 2 * time.Second

// projBatch is the crash tests' transaction size: small, so that kills
// land between and inside many transactions.
const projBatch = 50

// pingModel is a SQL projection: per stream, how many pings it applied and
// their sum, and per position which owner applied it. A double application
// shows as a count above the stream's events (and a primary key violation
// in applied, which rolls back).
type pingModel struct{ owner string }

func (pingModel) EventTypes() []string { return []string{bustest.Ping{}.EventType()} }
func (m pingModel) Apply(ctx context.Context, tx *sql.Tx, env eventsource.Envelope) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO ping_totals (stream, count, sum) VALUES ($1, 1, $2)
		ON CONFLICT (stream) DO UPDATE SET count = ping_totals.count + 1, sum = ping_totals.sum + excluded.sum`,
		env.AggregateID, env.Event.(bustest.Ping).N); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO applied (position, owner) VALUES ($1, $2)`, env.Position, m.owner)
	return err
}

const pingModelSchema = `
CREATE TABLE IF NOT EXISTS ping_totals (stream TEXT PRIMARY KEY, count INTEGER NOT NULL, sum INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS applied (position INTEGER PRIMARY KEY, owner TEXT NOT NULL);`

// openModel opens the read model in the store's own file.
func openModel(ctx context.Context, path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, pingModelSchema); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// projBackend is where a crash test keeps its store and read model:
// SQLite (the model in the store's file) or PostgreSQL (the model in the
// store's schema).
type projBackend string

const (
	projSQLite   projBackend = "sqlite"
	projPostgres projBackend = "postgres"
)

// leasedStore is a store the crash tests' runners read and lease from.
type leasedStore interface {
	eventstore.Store
	Lease() eventstore.Lease
}

type sqliteLeased struct{ *sqlite.Store }

func (s sqliteLeased) Lease() eventstore.Lease { return s.Store.Lease() }

type postgresLeased struct{ *postgres.Store }

func (s postgresLeased) Lease() eventstore.Lease { return s.Store.Lease() }

// openProjBackend opens the store and the read model the helper's env
// names (HELPER_BACKEND, then HELPER_DB or HELPER_PG_URL and
// HELPER_PG_SCHEMA); close releases them.
func openProjBackend(ctx context.Context, getenv func(string) string) (store leasedStore, db *sql.DB, close func(), err error) {
	reg := bustest.NewRegistry()
	if projBackend(getenv("HELPER_BACKEND")) == projPostgres {
		pool, err := openSchemaPool(ctx, getenv("HELPER_PG_URL"), getenv("HELPER_PG_SCHEMA"))
		if err != nil {
			return nil, nil, nil, err
		}
		if err := postgres.Migrate(ctx, pool); err != nil {
			pool.Close()
			return nil, nil, nil, err
		}
		db := stdlib.OpenDBFromPool(pool)
		if _, err := db.ExecContext(ctx, pingModelSchema); err != nil {
			db.Close()
			pool.Close()
			return nil, nil, nil, err
		}
		return postgresLeased{postgres.New(pool, reg)}, db, func() { db.Close(); pool.Close() }, nil
	}
	path := getenv("HELPER_DB")
	st, err := sqlite.Open(ctx, path, sqlite.WithRegistry(reg))
	if err != nil {
		return nil, nil, nil, err
	}
	if db, err = openModel(ctx, path); err != nil {
		st.Close()
		return nil, nil, nil, err
	}
	return sqliteLeased{st}, db, func() { db.Close(); st.Close() }, nil
}

// openSchemaPool opens a pool on url whose search_path is schema.
func openSchemaPool(ctx context.Context, url, schema string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	return pgxpool.NewWithConfig(ctx, cfg)
}

// projectionSQLHelper runs the SQL projection "totals" over the shared
// store until killed; HELPER_LEASE=1 runs it under the store's lease.
func projectionSQLHelper() int {
	ctx := context.Background()
	store, db, closeAll, err := openProjBackend(ctx, os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer closeAll()
	owner := os.Getenv("HELPER_OWNER")
	// Warnings go to stderr, which a failed test logs.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := []projection.Option{projection.WithCheckpoint(projBatch, 0), projection.WithLogger(logger),
		projection.WithBackoff(5*time.Millisecond, 50*time.Millisecond)}
	if os.Getenv("HELPER_LEASE") == "1" {
		opts = append(opts, projection.WithLease(store.Lease(), projLeaseTTL, owner))
	}
	r, err := projection.NewSQLRunner(ctx, "totals", pingModel{owner: owner}, store, db, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := r.Run(ctx, 10*time.Millisecond); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type projEnv struct {
	store leasedStore
	db    *sql.DB
	env   []string // what the helper needs to open the same backend
}

// newProjEnv opens a fresh store and read model on backend b, with the
// runner's tables created, as the helpers will find them.
func newProjEnv(t *testing.T, b projBackend) *projEnv {
	t.Helper()
	env := []string{"HELPER_BACKEND=" + string(b)}
	switch b {
	case projPostgres:
		url := postgresURL(t)
		env = append(env, "HELPER_PG_URL="+url, "HELPER_PG_SCHEMA="+testenv.PostgresSchema(t, url, "it_"))
	default:
		env = append(env, "HELPER_DB="+filepath.Join(t.TempDir(), "events.db"))
	}
	getenv := func(k string) string {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, k+"="); ok {
				return v
			}
		}
		return ""
	}
	store, db, closeAll, err := openProjBackend(t.Context(), getenv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeAll)
	if _, err := projection.NewSQLRunner(t.Context(), "totals", pingModel{}, store, db); err != nil {
		t.Fatal(err) // creates the runner's tables
	}
	return &projEnv{store: store, db: db, env: env}
}

func (e *projEnv) helper(t *testing.T, env ...string) (kill func()) {
	return startHelper(t, helperCmd("projection-sql", append(slices.Clone(e.env), env...)...))
}

func (e *projEnv) checkpoint(t *testing.T) int64 {
	t.Helper()
	var p int64
	err := e.db.QueryRowContext(t.Context(), `SELECT position FROM projection_checkpoints WHERE name = 'totals'`).Scan(&p)
	if err != nil && err != sql.ErrNoRows {
		t.Fatal(err)
	}
	return p
}

// wantModelMatchesStore recomputes the model from the store and compares:
// every event applied exactly once.
func (e *projEnv) wantModelMatchesStore(t *testing.T) int {
	t.Helper()
	type total struct{ count, sum int }
	want := map[string]total{}
	n := 0
	for env, err := range e.store.ReadAll(t.Context(), 1) {
		if err != nil {
			t.Fatal(err)
		}
		tt := want[env.AggregateID]
		tt.count++
		tt.sum += env.Event.(bustest.Ping).N
		want[env.AggregateID] = tt
		n++
	}
	rows, err := e.db.QueryContext(t.Context(), `SELECT stream, count, sum FROM ping_totals`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]total{}
	for rows.Next() {
		var s string
		var tt total
		if err := rows.Scan(&s, &tt.count, &tt.sum); err != nil {
			t.Fatal(err)
		}
		got[s] = tt
	}
	if len(got) != len(want) {
		t.Errorf("model has %d streams, store %d", len(got), len(want))
	}
	for s, w := range want {
		if got[s] != w {
			t.Errorf("stream %s: model %+v, recomputed %+v (count above: applied twice; below: lost)", s, got[s], w)
		}
	}
	return n
}

func appendPingStreams(t *testing.T, store eventstore.Store, chunks, per int) {
	t.Helper()
	for i := range chunks {
		envs := make([]eventsource.Envelope, per)
		for k := range envs {
			envs[k] = bustest.NewEnvelope("p"+strconv.Itoa(i%16), 0, bustest.Ping{N: i*per + k + 1})
		}
		if _, err := store.Append(t.Context(), "BustestAgg-p"+strconv.Itoa(i%16), eventstore.AnyVersion, envs); err != nil {
			t.Fatal(err)
		}
	}
}

// A process running a transactional projection is killed with SIGKILL at
// random points, many times, mid-catch-up; each restart resumes. The read
// model then equals a recomputation from the store: no event applied
// twice, none lost. On SQLite (model and store in one file) and on
// PostgreSQL (model and store in one schema).
func TestProjectionSQLKill9MidCatchUp(t *testing.T) {
	for _, b := range []projBackend{projSQLite, projPostgres} {
		t.Run(string(b), func(t *testing.T) { testProjectionSQLKill9MidCatchUp(t, b) })
	}
}

func testProjectionSQLKill9MidCatchUp(t *testing.T, b projBackend) {
	e := newProjEnv(t, b)
	const stored = 20_000
	appendPingStreams(t, e.store, stored/50, 50)
	const kills = 10
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	killedAt := []int64{}
	for range kills {
		before := e.checkpoint(t)
		if before == stored {
			break // caught up already (a fast machine): the kills so far came mid-catch-up
		}
		kill := e.helper(t, "HELPER_OWNER=crash")
		waitFor(t, 30*time.Second, fmt.Sprintf("the projection to commit after %d (start %d)", before, len(killedAt)+1),
			func() bool { return e.checkpoint(t) > before })
		deadline := time.Now().Add(time.Duration(rng.IntN(100)) * time.Millisecond)
		waitFor(t, time.Second, "a random point", func() bool { return time.Now().After(deadline) })
		kill()
		killedAt = append(killedAt, e.checkpoint(t))
	}
	// Then more events, and a run to the end.
	appendPingStreams(t, e.store, 20, 50)
	kill := e.helper(t, "HELPER_OWNER=final")
	waitForProgress(t, 30*time.Second, "the projection catching up", func() int64 { return e.checkpoint(t) }, stored+1_000)
	kill()
	n := e.wantModelMatchesStore(t)
	t.Logf("killed at checkpoints %v; %d events, model matches", killedAt, n)
	if killedAt[len(killedAt)-1] >= stored {
		t.Log("the last kill came after the catch-up ended; earlier ones were mid-catch-up")
	}
}

// Two processes run the same leased projection; the holder is killed with
// SIGKILL while events keep coming. The other takes over within the
// lease's TTL (plus a margin for this loaded machine) and applies every
// later event; the model matches the store, so no event was applied by
// both. A holder starved past its TTL before the kill may lose the lease
// to the other and win it back: that is failover working, and is logged.
func TestProjectionLeaseFailoverKill9(t *testing.T) {
	e := newProjEnv(t, projSQLite)
	kills := map[string]func(){
		"a": e.helper(t, "HELPER_OWNER=a", "HELPER_LEASE=1"),
		"b": e.helper(t, "HELPER_OWNER=b", "HELPER_LEASE=1"),
	}
	appendPingStreams(t, e.store, 20, 50)
	waitFor(t, 30*time.Second, "a holder to apply the first events", func() bool { return e.checkpoint(t) == 1000 })
	owner := func(pos int) string {
		var o string
		if err := e.db.QueryRowContext(t.Context(), `SELECT owner FROM applied WHERE position = $1`, pos).Scan(&o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	holder := owner(1000) // the holder now, which need not be the first one
	kills[holder]()
	killed := time.Now()
	appendPingStreams(t, e.store, 20, 50)
	waitFor(t, 30*time.Second, "the other instance to take over", func() bool { return e.checkpoint(t) == 2000 })
	took := time.Since(killed)
	t.Logf("killed %s; the other took over and caught up in %v (lease TTL %v)", holder, took, projLeaseTTL)
	if limit := projLeaseTTL + 5*time.Second; took > limit {
		t.Errorf("takeover took %v, want within the TTL plus margin (%v)", took, limit)
	}
	rows, err := e.db.QueryContext(t.Context(), `SELECT position, owner FROM applied ORDER BY position`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	switches, prev := 0, ""
	for rows.Next() {
		var pos int
		var o string
		if err := rows.Scan(&pos, &o); err != nil {
			t.Fatal(err)
		}
		if pos > 1000 && o == holder {
			t.Fatalf("position %d applied by %s, which was killed before it was appended", pos, o)
		}
		if prev != "" && o != prev {
			switches++
		}
		prev = o
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if switches > 1 {
		t.Logf("the lease changed hands %d times before the kill: a holder starved past its TTL", switches-1)
	}
	e.wantModelMatchesStore(t)
}
