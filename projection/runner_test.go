package projection_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/projection"
)

var quiet = projection.WithLogger(slog.New(slog.DiscardHandler))

// countingCheckpoints counts saves.
type countingCheckpoints struct {
	*eventstore.MemoryCheckpoints
	saves atomic.Int64
}

func (c *countingCheckpoints) SaveCheckpoint(ctx context.Context, name string, p int64) error {
	c.saves.Add(1)
	return c.MemoryCheckpoints.SaveCheckpoint(ctx, name, p)
}

// SwapCheckpoint is how the runner's follower saves (CheckpointSwapper).
func (c *countingCheckpoints) SwapCheckpoint(ctx context.Context, name string, old, p int64) (bool, error) {
	c.saves.Add(1)
	return c.MemoryCheckpoints.SwapCheckpoint(ctx, name, old, p)
}

func appendPings(t *testing.T, store eventstore.Store, stream string, from, n int) {
	t.Helper()
	envs := make([]eventsource.Envelope, n)
	for i := range envs {
		envs[i] = bustest.NewEnvelope(stream, 0, bustest.Ping{N: from + i})
	}
	if _, err := store.Append(context.Background(), stream, eventstore.AnyVersion, envs); err != nil {
		t.Fatal(err)
	}
}

// The default runner saves its checkpoint per thousand events and at the
// end of the pass, not per event.
func TestRunnerBatchesCheckpointsByDefault(t *testing.T) {
	store := eventstore.NewMemory()
	appendPings(t, store, "s1", 1, 2500)
	cps := &countingCheckpoints{MemoryCheckpoints: eventstore.NewMemoryCheckpoints()}
	p := newSyncCounter()
	r := projection.NewRunner("pings", p, store, cps)
	if n, err := r.CatchUp(t.Context()); err != nil || n != 2500 {
		t.Fatalf("CatchUp = %d, %v; want 2500", n, err)
	}
	if got := cps.saves.Load(); got != 3 {
		t.Errorf("%d checkpoint saves for 2500 events, want 3 (1000, 2000, the end)", got)
	}
	if cp, _ := cps.Checkpoint(t.Context(), "pings"); cp != 2500 {
		t.Errorf("checkpoint %d, want 2500", cp)
	}

	// Every event, when asked.
	cps2 := &countingCheckpoints{MemoryCheckpoints: eventstore.NewMemoryCheckpoints()}
	if _, err := projection.NewRunner("pings", newSyncCounter(), store, cps2, projection.WithCheckpoint(1, 0)).CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := cps2.saves.Load(); got != 2500 {
		t.Errorf("WithCheckpoint(1): %d saves, want 2500", got)
	}
}

// A slow projection still saves every checkpoint interval.
func TestRunnerSavesEveryInterval(t *testing.T) {
	store := eventstore.NewMemory()
	appendPings(t, store, "s1", 1, 20)
	cps := &countingCheckpoints{MemoryCheckpoints: eventstore.NewMemoryCheckpoints()}
	slow := &slowProjection{d: 5 * time.Millisecond}
	r := projection.NewRunner("slow", slow, store, cps, projection.WithCheckpoint(1000, 20*time.Millisecond))
	if _, err := r.CatchUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := cps.saves.Load(); got < 3 || got > 20 {
		t.Errorf("%d saves over about 100ms with a 20ms interval, want several", got)
	}
}

type slowProjection struct{ d time.Duration }

func (*slowProjection) EventTypes() []string { return []string{bustest.Ping{}.EventType()} }
func (s *slowProjection) Handle(context.Context, eventsource.Envelope) error {
	time.Sleep(s.d) // the projection's own work, not a wait for a condition
	return nil
}

// A runner that has caught up wakes on an append (the store announces
// it), long before its hour-long poll.
func TestRunWakesOnAppend(t *testing.T) {
	for name, store := range map[string]eventstore.Store{"memory": eventstore.NewMemory(), "sqlite": openSQLite(t)} {
		t.Run(name, func(t *testing.T) {
			p := newSyncCounter()
			r := projection.NewRunner("live", p, store, eventstore.NewMemoryCheckpoints())
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx, time.Hour) }()
			waitRunner(t, "the runner to be live", done, func() bool { return r.Status().State == eventstore.StateLive })
			appendPings(t, store, "s1", 1, 1)
			waitRunner(t, "the appended event", done, func() bool { return p.times(1) == 1 })
			waitRunner(t, "live with no lag", done, func() bool {
				st := r.Status()
				return st.State == eventstore.StateLive && st.Lag() == 0 && st.Head == 1 && st.LagTime == 0
			})
			cancel()
			if err := runnerStopped(t, done); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// failOn fails on every Ping whose N is in fail, and counts the others.
type failOn struct {
	mu      sync.Mutex
	fail    map[int]bool
	applied map[int]int
	block   chan struct{} // when set, Handle waits on it first
}

func newFailOn(ns ...int) *failOn {
	f := &failOn{fail: map[int]bool{}, applied: map[int]int{}}
	for _, n := range ns {
		f.fail[n] = true
	}
	return f
}

func (*failOn) EventTypes() []string { return []string{bustest.Ping{}.EventType()} }
func (f *failOn) Handle(ctx context.Context, env eventsource.Envelope) error {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	n := env.Event.(bustest.Ping).N
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[n] {
		return fmt.Errorf("cannot apply ping %d", n)
	}
	f.applied[n]++
	return nil
}

func (f *failOn) count(n int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied[n]
}

// By default a runner halts on an event its projection keeps failing: Run
// returns a HaltError, Status says halted, and the checkpoint stays before
// the event.
func TestRunHaltsAfterMaxAttempts(t *testing.T) {
	store := eventstore.NewMemory()
	appendPings(t, store, "s1", 1, 3)
	cps := eventstore.NewMemoryCheckpoints()
	p := newFailOn(2)
	r := projection.NewRunner("halting", p, store, cps, projection.WithMaxAttempts(3),
		projection.WithBackoff(time.Millisecond, 2*time.Millisecond), quiet)
	errc := make(chan error, 1)
	go func() { errc <- r.Run(t.Context(), time.Hour) }()
	err := runnerStopped(t, errc)
	var h *projection.HaltError
	if !errors.As(err, &h) || !errors.Is(err, projection.ErrHalted) || h.Position != 2 || h.Attempts != 3 {
		t.Fatalf("Run = %v; want a HaltError at position 2 after 3 attempts", err)
	}
	st := r.Status()
	if st.State != eventstore.StateHalted || st.Halted == nil || st.Position != 1 || st.LastError == nil {
		t.Errorf("status = %+v; want halted at position 1 with the error", st)
	}
	if cp, _ := cps.Checkpoint(t.Context(), "halting"); cp != 1 {
		t.Errorf("checkpoint %d, want 1", cp)
	}
	if p.count(3) != 0 {
		t.Error("an event after the halting one was applied")
	}
}

// memoryParker records parked events.
type memoryParker struct {
	mu     sync.Mutex
	parked []projection.ParkedEvent
}

func (m *memoryParker) Park(_ context.Context, e projection.ParkedEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.parked = append(m.parked, e)
	return nil
}

// With parking, the failing event is recorded and the runner goes on.
func TestRunParksAndGoesOn(t *testing.T) {
	store := eventstore.NewMemory()
	appendPings(t, store, "s1", 1, 4)
	p := newFailOn(2)
	parker := &memoryParker{}
	r := projection.NewRunner("parking", p, store, eventstore.NewMemoryCheckpoints(), projection.WithMaxAttempts(2),
		projection.WithParking(parker), projection.WithBackoff(time.Millisecond, 2*time.Millisecond), quiet)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, time.Hour) }()
	// The pass that applies event 4 goes live only once it has returned.
	waitRunner(t, "the events after the parked one, and the runner live", done, func() bool {
		return p.count(4) == 1 && r.Status().State == eventstore.StateLive
	})
	st := r.Status()
	if st.Parked != 1 || st.Position != 4 || st.State != eventstore.StateLive || st.LastError == nil {
		t.Errorf("status = %+v; want 1 parked, position 4, live, the error kept", st)
	}
	parked, _ := r.Parked(t.Context())
	if len(parked) != 1 || parked[0].Position != 2 || parked[0].Attempts != 2 || parked[0].Error == "" {
		t.Errorf("parked = %+v; want position 2 after 2 attempts, with its error", parked)
	}
	if len(parker.parked) != 1 {
		t.Errorf("the Parker recorded %d events, want 1", len(parker.parked))
	}
	cancel()
	if err := runnerStopped(t, done); err != nil {
		t.Fatal(err)
	}
}

// While an event fails, Status says retrying with the attempts and error;
// while the runner is behind, it reports the lag in events and time.
func TestStatusRetryingAndLag(t *testing.T) {
	store := eventstore.NewMemory()
	p := newFailOn(1)
	r := projection.NewRunner("status", p, store, eventstore.NewMemoryCheckpoints(),
		projection.WithBackoff(time.Millisecond, 5*time.Millisecond), projection.WithMaxAttempts(1_000_000), quiet)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, time.Hour) }()
	waitRunner(t, "live", done, func() bool { return r.Status().State == eventstore.StateLive })
	appendPings(t, store, "s1", 1, 3)
	waitRunner(t, "retrying with lag", done, func() bool {
		st := r.Status()
		return st.State == eventstore.StateRetrying && st.Attempts >= 2 && st.LastError != nil &&
			st.Head == 3 && st.Lag() == 3 && st.LagTime > 0
	})
	p.mu.Lock()
	delete(p.fail, 1)
	p.mu.Unlock()
	waitRunner(t, "caught up", done, func() bool {
		st := r.Status()
		return st.State == eventstore.StateLive && st.Lag() == 0 && st.LagTime == 0 && st.Attempts == 0 && st.Position == 3
	})
	cancel()
	if err := runnerStopped(t, done); err != nil {
		t.Fatal(err)
	}
}

// Two runners of one name share a lease: one applies, the other stands
// by, and takes over when the first stops; every event is applied once.
func TestRunLeaseOneActiveThenTakeover(t *testing.T) {
	store := eventstore.NewMemory()
	cps := eventstore.NewMemoryCheckpoints()
	lease := eventstore.NewMemoryLease()
	p := newSyncCounter()
	newR := func(owner string) *projection.Runner {
		return projection.NewRunner("leased", p, store, cps, projection.WithLease(lease, 200*time.Millisecond, owner),
			projection.WithCheckpoint(1, 0), quiet)
	}
	a, b := newR("a"), newR("b")
	ctxA, cancelA := context.WithCancel(t.Context())
	defer cancelA()
	ctxB, cancelB := context.WithCancel(t.Context())
	defer cancelB()
	doneA, doneB := make(chan error, 1), make(chan error, 1)
	go func() { doneA <- a.Run(ctxA, 5*time.Millisecond) }()
	waitRunner(t, "a live", doneA, func() bool { return a.Status().State == eventstore.StateLive })
	go func() { doneB <- b.Run(ctxB, 5*time.Millisecond) }()
	waitRunner(t, "b standing by", doneB, func() bool { return b.Status().State == eventstore.StateStandby })
	appendPings(t, store, "s1", 1, 50)
	waitRunner(t, "a applies", doneA, func() bool { return p.times(50) == 1 })
	if st := b.Status(); st.State != eventstore.StateStandby {
		t.Fatalf("b's state = %s while a holds the lease, want standby", st.State)
	}
	cancelA()
	if err := runnerStopped(t, doneA); err != nil {
		t.Fatal(err)
	}
	appendPings(t, store, "s1", 51, 50)
	waitRunner(t, "b takes over", doneB, func() bool { return p.times(100) == 1 })
	for n := 1; n <= 100; n++ {
		if got := p.times(n); got != 1 {
			t.Fatalf("ping %d applied %d times, want once", n, got)
		}
	}
	cancelB()
	if err := runnerStopped(t, doneB); err != nil {
		t.Fatal(err)
	}
}

func openSQLite(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "events.db"), sqlite.WithRegistry(bustest.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// ---- SQL projections -----------------------------------------------------

// pingTable keeps, per stream, the number and sum of its pings in a table
// of the read model's database.
type pingTable struct {
	fail atomic.Int64 // a Ping N to fail on, 0 for none
}

func (*pingTable) EventTypes() []string { return []string{bustest.Ping{}.EventType()} }
func (p *pingTable) Apply(ctx context.Context, tx *sql.Tx, env eventsource.Envelope) error {
	n := env.Event.(bustest.Ping).N
	if int64(n) == p.fail.Load() {
		return fmt.Errorf("cannot apply ping %d", n)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO ping_totals (stream, count, sum) VALUES ($1, 1, $2)
		ON CONFLICT (stream) DO UPDATE SET count = ping_totals.count + 1, sum = ping_totals.sum + excluded.sum`,
		env.AggregateID, n)
	return err
}
func (*pingTable) Reset(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM ping_totals`)
	return err
}

func openReadModel(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.ExecContext(t.Context(), `CREATE TABLE IF NOT EXISTS ping_totals (stream TEXT PRIMARY KEY, count INTEGER NOT NULL, sum INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return db
}

func totals(t *testing.T, db *sql.DB) (count, sum int) {
	t.Helper()
	if err := db.QueryRowContext(t.Context(), `SELECT COALESCE(SUM(count), 0), COALESCE(SUM(sum), 0) FROM ping_totals`).Scan(&count, &sum); err != nil {
		t.Fatal(err)
	}
	return count, sum
}

// A SQL runner commits read model and checkpoint together; a failing event
// rolls back only itself, is retried, then parked in the table; Rebuild
// recomputes the same model.
func TestSQLRunnerOnSQLite(t *testing.T) {
	store := openSQLite(t)
	db := openReadModel(t, filepath.Join(t.TempDir(), "model.db"))
	appendPings(t, store, "a", 1, 1500)
	p := &pingTable{}
	p.fail.Store(700)
	r, err := projection.NewSQLRunner(t.Context(), "totals", p, store, db, projection.WithMaxAttempts(2),
		projection.WithParking(nil), projection.WithBackoff(time.Millisecond, 2*time.Millisecond), quiet)
	if err != nil {
		t.Fatal(err)
	}
	// CatchUp does not retry: it stops before the failing event, having
	// committed what came before it in the same batch.
	if _, err := r.CatchUp(t.Context()); err == nil {
		t.Fatal("CatchUp over a failing event succeeded")
	}
	if c, _ := totals(t, db); c != 699 {
		t.Fatalf("read model has %d pings after a failure at 700, want 699", c)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, time.Hour) }()
	waitRunner(t, "the events after the parked one", done, func() bool { return r.Status().Position == 1500 })
	c, sum := totals(t, db)
	if want := 1500*1501/2 - 700; c != 1499 || sum != want {
		t.Errorf("read model: %d pings, sum %d; want 1499, %d", c, sum, want)
	}
	parked, err := r.Parked(t.Context())
	if err != nil || len(parked) != 1 || parked[0].Position != 700 || parked[0].Error == "" {
		t.Errorf("parked = %+v, %v; want position 700 with its error", parked, err)
	}
	cancel()
	if err := runnerStopped(t, done); err != nil {
		t.Fatal(err)
	}
	p.fail.Store(0)
	if n, err := r.Rebuild(t.Context()); err != nil || n != 1500 {
		t.Fatalf("Rebuild = %d, %v", n, err)
	}
	if c, sum := totals(t, db); c != 1500 || sum != 1500*1501/2 {
		t.Errorf("rebuilt model: %d pings, sum %d", c, sum)
	}
}

// Two SQL runners of one name without a lease: the conditional checkpoint
// update makes the loser of each race roll back, so no event is applied
// twice.
func TestSQLRunnersFenceEachOther(t *testing.T) {
	store := openSQLite(t)
	path := filepath.Join(t.TempDir(), "model.db")
	dbA, dbB := openReadModel(t, path), openReadModel(t, path)
	p := &pingTable{}
	newR := func(db *sql.DB) *projection.Runner {
		r, err := projection.NewSQLRunner(t.Context(), "totals", p, store, db, projection.WithCheckpoint(7, 0),
			projection.WithBackoff(time.Millisecond, 5*time.Millisecond), quiet)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := newR(dbA), newR(dbB)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	doneA, doneB := make(chan error, 1), make(chan error, 1)
	go func() { doneA <- a.Run(ctx, 2*time.Millisecond) }()
	go func() { doneB <- b.Run(ctx, 2*time.Millisecond) }()
	for i := range 20 {
		appendPings(t, store, fmt.Sprintf("s%d", i%3), i*50+1, 50)
	}
	waitRunner(t, "both runners at the end", doneA, func() bool {
		return a.Status().Position == 1000 || b.Status().Position == 1000
	})
	waitRunner(t, "the model complete", doneB, func() bool { c, _ := totals(t, dbA); return c >= 1000 })
	if c, sum := totals(t, dbA); c != 1000 || sum != 1000*1001/2 {
		t.Errorf("read model: %d pings, sum %d; want 1000, %d (each once)", c, sum, 1000*1001/2)
	}
	cancel()
	runnerStopped(t, doneA)
	runnerStopped(t, doneB)
}
