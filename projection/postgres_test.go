package projection_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/projection"
)

// pgSetup returns two stores on one fresh schema (as two processes would
// have) and a read model on a third pool of it.
func pgSetup(t *testing.T) (a, b *postgres.Store, db *sql.DB) {
	t.Helper()
	url := testenv.URL(t, "EVENTSOURCE_POSTGRES_URL", "a PostgreSQL server")
	schema := testenv.PostgresSchema(t, url, "proj_")
	open := func() *postgres.Store {
		pool := testenv.PostgresPool(t, url, schema)
		if err := postgres.Migrate(t.Context(), pool); err != nil {
			t.Fatal(err)
		}
		return postgres.New(pool, bustest.NewRegistry())
	}
	a, b = open(), open()
	db = stdlib.OpenDBFromPool(testenv.PostgresPool(t, url, schema))
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.ExecContext(t.Context(), `CREATE TABLE IF NOT EXISTS ping_totals (stream TEXT PRIMARY KEY, count INTEGER NOT NULL, sum INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return a, b, db
}

// panicky panics on Ping panicOn, and otherwise blocks on Ping blockOn
// until ctx ends, then returns ctx's error.
type panicky struct {
	pingTable
	panicOn, blockOn int
	entered          chan struct{}
}

func (p *panicky) Apply(ctx context.Context, tx *sql.Tx, env eventsource.Envelope) error {
	switch env.Event.(bustest.Ping).N {
	case p.panicOn:
		panic("boom")
	case p.blockOn:
		p.blockOn = 0
		close(p.entered)
		<-ctx.Done()
		return ctx.Err()
	}
	return p.pingTable.Apply(ctx, tx, env)
}

// On PostgreSQL: a SQL runner stopped in the middle of a batch commits
// nothing of it (neither rows nor checkpoint); a panicking Apply halts it
// with the batch rolled back; and either way every connection goes back
// to the pool.
func TestSQLRunnerOnPostgresStopAndPanic(t *testing.T) {
	store, _, db := pgSetup(t)
	appendPings(t, store, "s1", 1, 10)
	p := &panicky{blockOn: 5, entered: make(chan struct{})}
	r, err := projection.NewSQLRunner(t.Context(), "pg", p, store, db, projection.WithMaxAttempts(1), quiet)
	if err != nil {
		t.Fatal(err)
	}
	done, cancel := startRun(t, r, time.Hour)
	select {
	case <-p.entered:
	case err := <-done:
		t.Fatalf("Run returned %v before event 5", err)
	case <-time.After(runTimeout):
		t.Fatal("event 5 never tried")
	}
	cancel()
	if err := runnerStopped(t, done); err != nil {
		t.Fatalf("Run after a stop mid-batch = %v, want nil", err)
	}
	if c, _ := totals(t, db); c != 0 {
		t.Errorf("read model has %d pings after a stop mid-batch, want 0 (the batch rolled back)", c)
	}
	if st := r.Status(); st.Position != 0 || st.State != eventstore.StateStopped {
		t.Errorf("status = %+v; want position 0, stopped", st)
	}
	if n := db.Stats().InUse; n != 0 {
		t.Errorf("%d connections still in use after the stop", n)
	}

	p.panicOn = 7
	done, _ = startRun(t, r, time.Hour)
	err = runnerStopped(t, done)
	var h *projection.HaltError
	if !errors.As(err, &h) || h.Position != 7 {
		t.Fatalf("Run = %v; want a halt at 7", err)
	}
	if c, sum := totals(t, db); c != 6 || sum != 21 {
		t.Errorf("read model: %d pings, sum %d; want 6, 21", c, sum)
	}
	if n := db.Stats().InUse; n != 0 {
		t.Errorf("%d connections still in use after the panic", n)
	}
}

// On PostgreSQL, a live runner wakes on another process's append (NOTIFY)
// long before its poll, append after append; and two runners of one name
// without a lease apply each event once.
func TestSQLRunnersOnPostgresWakeAndFence(t *testing.T) {
	a, b, db := pgSetup(t)
	newR := func(store *postgres.Store) *projection.Runner {
		r, err := projection.NewSQLRunner(t.Context(), "pg", &pingTable{}, store, db, projection.WithCheckpoint(7, 0),
			projection.WithBackoff(time.Millisecond, 5*time.Millisecond), quiet)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ra, rb := newR(a), newR(b)
	doneA, cancelA := startRun(t, ra, time.Hour)
	doneB, cancelB := startRun(t, rb, time.Hour)
	waitRunner(t, "a live", doneA, func() bool { return ra.Status().State == eventstore.StateLive })
	waitRunner(t, "b live", doneB, func() bool { return rb.Status().State == eventstore.StateLive })
	// Appended through b: a learns of it only through NOTIFY.
	var worst time.Duration
	for i := 1; i <= 30; i++ {
		start := time.Now()
		appendPings(t, b, fmt.Sprintf("s%d", i%3), i, 1)
		waitRunner(t, fmt.Sprintf("ping %d applied", i), doneA, func() bool {
			c, _ := totals(t, db)
			return c == i
		})
		worst = max(worst, time.Since(start))
	}
	t.Logf("worst append-to-applied latency: %v (poll: 1h)", worst)
	for i := range 10 {
		appendPings(t, a, fmt.Sprintf("s%d", i%3), 31+i*50, 50)
	}
	waitRunner(t, "the model complete", doneA, func() bool { c, _ := totals(t, db); return c >= 530 })
	if c, sum := totals(t, db); c != 530 || sum != 530*531/2 {
		t.Errorf("read model: %d pings, sum %d; want 530, %d (each once)", c, sum, 530*531/2)
	}
	cancelA()
	cancelB()
	if err := runnerStopped(t, doneA); err != nil {
		t.Error(err)
	}
	if err := runnerStopped(t, doneB); err != nil {
		t.Error(err)
	}
}
