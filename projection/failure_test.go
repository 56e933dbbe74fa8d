package projection_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/projection"
)

// flakyPings fails Ping N while fails[N] is left (-1: on every try), and
// counts every try and every failure. As a SQL projection it adds the
// Pings it applies to ping_totals (see pingTable). Two ways to make a
// failure land where a test wants it:
//   - slowAgain: every try of an N after its first takes at least this
//     long, as a read model under load applies retries slower than first
//     attempts. Set to the checkpoint interval, one such try passes the
//     interval of the transaction it runs in.
//   - blockFirst: the first try of this N waits for ctx to end, then
//     fails, as for a runner deposed mid-try.
type flakyPings struct {
	pingTable
	slowAgain  time.Duration
	blockFirst int
	entered    chan struct{} // closed when the blockFirst try starts

	mu       sync.Mutex
	fails    map[int]int
	tries    map[int]int
	failures map[int]int
}

func newFlakyPings(fails map[int]int) *flakyPings {
	return &flakyPings{fails: fails, tries: map[int]int{}, failures: map[int]int{}, entered: make(chan struct{})}
}

func (f *flakyPings) try(ctx context.Context, env eventsource.Envelope) error {
	n := env.Event.(bustest.Ping).N
	f.mu.Lock()
	f.tries[n]++
	again := f.tries[n] > 1
	block := n == f.blockFirst && !again
	fail := block || f.fails[n] != 0
	if f.fails[n] > 0 {
		f.fails[n]--
	}
	if fail {
		f.failures[n]++
	}
	f.mu.Unlock()
	if again && f.slowAgain > 0 {
		// The runner's transaction began before this try, so it has
		// lasted at least slowAgain once this returns.
		time.Sleep(f.slowAgain)
	}
	if block {
		close(f.entered)
		<-ctx.Done()
	}
	if fail {
		return fmt.Errorf("cannot apply ping %d", n)
	}
	return nil
}

func (f *flakyPings) Handle(ctx context.Context, env eventsource.Envelope) error {
	return f.try(ctx, env)
}

func (f *flakyPings) Apply(ctx context.Context, tx *sql.Tx, env eventsource.Envelope) error {
	if err := f.try(ctx, env); err != nil {
		return err
	}
	return f.pingTable.Apply(ctx, tx, env)
}

// tried is how many times N was tried; failed, how many of those failed.
func (f *flakyPings) tried(n int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tries[n]
}

func (f *flakyPings) failed(n int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failures[n]
}

// parkedAt lists parked events as {position, attempts}.
func parkedAt(t *testing.T, r *projection.Runner) [][2]int64 {
	t.Helper()
	ps, err := r.Parked(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := [][2]int64{}
	for _, p := range ps {
		out = append(out, [2]int64{p.Position, int64(p.Attempts)})
	}
	return out
}

// waitReturn waits for Run to return, calling check meanwhile (which may
// fail the test at once).
func waitReturn(t *testing.T, done <-chan error, check func()) error {
	t.Helper()
	end := time.Now().Add(runTimeout)
	for {
		select {
		case err := <-done:
			return err
		default:
		}
		check()
		if time.Now().After(end) {
			t.Fatalf("Run did not return within %v", runTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

func newFlakySQLRunner(t *testing.T, name string, p *flakyPings, store eventstore.Store, opts ...projection.Option) (*projection.Runner, *sql.DB) {
	t.Helper()
	db := openReadModel(t, filepath.Join(t.TempDir(), "model.db"))
	r, err := projection.NewSQLRunner(t.Context(), name, p, store, db, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r, db
}

func startRun(t *testing.T, r *projection.Runner, interval time.Duration) (<-chan error, context.CancelFunc) {
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, interval) }()
	return done, cancel
}

// WithMaxAttempts(1): the first failure of an event halts the runner, or
// parks the event, for plain and SQL runners alike. (A SQL runner took 1
// for CatchUp's "no failure policy" and retried the event forever.)
func TestRunMaxAttemptsOne(t *testing.T) {
	for _, kind := range []string{"plain", "sql"} {
		for _, park := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/park=%v", kind, park), func(t *testing.T) {
				store := openSQLite(t)
				appendPings(t, store, "s1", 1, 3)
				p := newFlakyPings(map[int]int{2: -1})
				opts := []projection.Option{projection.WithMaxAttempts(1), projection.WithBackoff(time.Millisecond, 2*time.Millisecond), quiet}
				if park {
					opts = append(opts, projection.WithParking(nil))
				}
				var (
					r  *projection.Runner
					db *sql.DB
				)
				if kind == "sql" {
					r, db = newFlakySQLRunner(t, "once", p, store, opts...)
				} else {
					r = projection.NewRunner("once", p, store, eventstore.NewMemoryCheckpoints(), opts...)
				}
				done, cancel := startRun(t, r, time.Hour)
				triedOnce := func() {
					if n := p.tried(2); n > 1 {
						t.Fatalf("event 2 tried %d times with WithMaxAttempts(1), want once", n)
					}
				}
				wantCount, wantSum := 1, 1
				if park {
					waitRunner(t, "the event after the parked one", done, func() bool {
						triedOnce()
						return r.Status().Position == 3
					})
					if got, want := parkedAt(t, r), [][2]int64{{2, 1}}; !slices.Equal(got, want) {
						t.Errorf("parked {position, attempts} = %v, want %v", got, want)
					}
					if st := r.Status(); st.Parked != 1 || st.Attempts != 0 {
						t.Errorf("status = %+v; want 1 parked, no attempts pending", st)
					}
					cancel()
					if err := runnerStopped(t, done); err != nil {
						t.Fatal(err)
					}
					wantCount, wantSum = 2, 4
				} else {
					err := waitReturn(t, done, triedOnce)
					var h *projection.HaltError
					if !errors.As(err, &h) || h.Position != 2 || h.Attempts != 1 {
						t.Fatalf("Run = %v; want a HaltError at position 2 after 1 attempt", err)
					}
				}
				if n := p.tried(2); n != 1 {
					t.Errorf("event 2 tried %d times, want 1", n)
				}
				if kind == "sql" {
					if c, sum := totals(t, db); c != wantCount || sum != wantSum {
						t.Errorf("read model: %d pings, sum %d; want %d, %d", c, sum, wantCount, wantSum)
					}
				} else if got := p.tried(1) + p.tried(3); got != wantCount {
					t.Errorf("events 1 and 3 tried %d times, want %d", got, wantCount)
				}
			})
		}
	}
}

// A SQL runner counts attempts per event: an event that failed and then
// succeeded, in a transaction that failed further on, does not lend its
// count to the next failing event. Events 2 and 3 fail once each (and
// are applied on their second try); 5 fails every time and is parked, or
// halts the runner, after exactly MaxAttempts tries.
func TestSQLRunnerCountsAttemptsPerEvent(t *testing.T) {
	for _, park := range []bool{false, true} {
		t.Run(fmt.Sprintf("park=%v", park), func(t *testing.T) {
			store := openSQLite(t)
			appendPings(t, store, "s1", 1, 6)
			p := newFlakyPings(map[int]int{2: 1, 3: 1, 5: -1})
			opts := []projection.Option{projection.WithMaxAttempts(2), projection.WithBackoff(time.Millisecond, 2*time.Millisecond), quiet}
			if park {
				opts = append(opts, projection.WithParking(nil))
			}
			r, db := newFlakySQLRunner(t, "per-event", p, store, opts...)
			done, cancel := startRun(t, r, time.Hour)
			wantCount, wantSum := 3, 1+2+3+4
			if park {
				waitRunner(t, "the end", done, func() bool { return r.Status().Position == 6 })
				if got, want := parkedAt(t, r), [][2]int64{{5, 2}}; !slices.Equal(got, want) {
					t.Errorf("parked {position, attempts} = %v, want %v", got, want)
				}
				cancel()
				if err := runnerStopped(t, done); err != nil {
					t.Fatal(err)
				}
				wantCount, wantSum = 5, 1+2+3+4+6
			} else {
				err := waitReturn(t, done, func() {})
				var h *projection.HaltError
				if !errors.As(err, &h) || h.Position != 5 || h.Attempts != 2 {
					t.Fatalf("Run = %v; want a HaltError at position 5 after 2 attempts", err)
				}
				wantCount = 4
			}
			for n, want := range map[int]int{2: 1, 3: 1, 5: 2} {
				if got := p.failed(n); got != want {
					t.Errorf("event %d failed %d times, want %d", n, got, want)
				}
			}
			if c, sum := totals(t, db); c != wantCount || sum != wantSum {
				t.Errorf("read model: %d pings, sum %d; want %d, %d", c, sum, wantCount, wantSum)
			}
		})
	}
}

// deposingLease is a MemoryLease that, while deposed is set, refuses
// renewals and acquisitions as if another instance held it, and counts
// the refused acquisitions (those of a runner standing by).
type deposingLease struct {
	*eventstore.MemoryLease
	deposed atomic.Bool
	refused atomic.Int64
}

func (l *deposingLease) TryAcquire(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if l.deposed.Load() {
		l.refused.Add(1)
		return false, nil
	}
	return l.MemoryLease.TryAcquire(ctx, name, owner, ttl)
}

func (l *deposingLease) Renew(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if l.deposed.Load() {
		return false, nil
	}
	return l.MemoryLease.Renew(ctx, name, owner, ttl)
}

// A runner that loses its lease while it tries an event, and gets it back
// after another instance applied that event, counts the next failing
// event's attempts from zero.
func TestRunAttemptsAfterLeaseLoss(t *testing.T) {
	store := eventstore.NewMemory()
	appendPings(t, store, "s1", 1, 4)
	cps := eventstore.NewMemoryCheckpoints()
	lease := &deposingLease{MemoryLease: eventstore.NewMemoryLease()}
	p := newFlakyPings(map[int]int{3: 1})
	p.blockFirst = 2
	r := projection.NewRunner("deposed", p, store, cps, projection.WithLease(lease, 150*time.Millisecond, "a"),
		projection.WithMaxAttempts(2), projection.WithBackoff(time.Millisecond, 2*time.Millisecond),
		projection.WithCheckpoint(1, 0), quiet)
	done, cancel := startRun(t, r, 5*time.Millisecond)
	select {
	case <-p.entered:
	case err := <-done:
		t.Fatalf("Run returned %v before trying event 2", err)
	case <-time.After(runTimeout):
		t.Fatal("the runner never tried event 2")
	}
	lease.deposed.Store(true)
	waitRunner(t, "the deposed runner standing by", done, func() bool { return lease.refused.Load() > 0 })
	// Another instance applied event 2 meanwhile.
	if err := cps.SaveCheckpoint(t.Context(), "deposed", 2); err != nil {
		t.Fatal(err)
	}
	lease.deposed.Store(false)
	waitRunner(t, "the events after 2", done, func() bool { return r.Status().Position == 4 })
	if st := r.Status(); st.Halted != nil || st.Attempts != 0 || st.Parked != 0 {
		t.Errorf("status = %+v; want no halt, no attempts pending, nothing parked", st)
	}
	for n, want := range map[int]int{1: 1, 2: 1, 3: 2, 4: 1} {
		if got := p.tried(n); got != want {
			t.Errorf("event %d tried %d times, want %d", n, got, want)
		}
	}
	cancel()
	if err := runnerStopped(t, done); err != nil {
		t.Fatal(err)
	}
}

// After a projection error, a SQL runner commits the events before the
// failing one again, whole: were that commit cut at the checkpoint
// interval (retries being slower than first attempts), the failure would
// be blamed on the first event left out, which never failed. Every try
// after an event's first takes a whole interval here.
func TestSQLRunnerRecommitBlamesTheFailingEvent(t *testing.T) {
	const interval = 50 * time.Millisecond
	for _, tc := range []struct {
		name        string
		events      int
		fails       map[int]int
		maxAttempts int
		park        bool
		parked      [][2]int64 // park: {position, attempts}
		haltAt      int64      // !park
		poison      int
		count, sum  int
	}{
		{name: "park at once", events: 5, fails: map[int]int{4: -1}, maxAttempts: 1, park: true,
			parked: [][2]int64{{4, 1}}, poison: 4, count: 4, sum: 1 + 2 + 3 + 5},
		{name: "halt at once", events: 5, fails: map[int]int{4: -1}, maxAttempts: 1,
			haltAt: 4, poison: 4, count: 3, sum: 1 + 2 + 3},
		{name: "park after a transient failure", events: 10, fails: map[int]int{2: 1, 6: -1}, maxAttempts: 2, park: true,
			parked: [][2]int64{{6, 2}}, poison: 6, count: 9, sum: 55 - 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := openSQLite(t)
			appendPings(t, store, "s1", 1, tc.events)
			p := newFlakyPings(tc.fails)
			p.slowAgain = interval
			opts := []projection.Option{projection.WithMaxAttempts(tc.maxAttempts), projection.WithCheckpoint(1000, interval),
				projection.WithBackoff(time.Millisecond, 2*time.Millisecond), quiet}
			if tc.park {
				opts = append(opts, projection.WithParking(nil))
			}
			r, db := newFlakySQLRunner(t, "recommit", p, store, opts...)
			done, cancel := startRun(t, r, time.Hour)
			triedAtMost := func() {
				if n := p.failed(tc.poison); n > tc.maxAttempts {
					t.Fatalf("event %d failed %d times, want at most %d", tc.poison, n, tc.maxAttempts)
				}
			}
			if tc.park {
				waitRunner(t, "the end", done, func() bool {
					triedAtMost()
					return r.Status().Position == int64(tc.events)
				})
				if got := parkedAt(t, r); !slices.Equal(got, tc.parked) {
					t.Errorf("parked {position, attempts} = %v, want %v", got, tc.parked)
				}
				cancel()
				if err := runnerStopped(t, done); err != nil {
					t.Fatal(err)
				}
			} else {
				err := waitReturn(t, done, triedAtMost)
				var h *projection.HaltError
				if !errors.As(err, &h) || h.Position != tc.haltAt || h.Attempts != tc.maxAttempts {
					t.Fatalf("Run = %v; want a HaltError at position %d after %d attempts", err, tc.haltAt, tc.maxAttempts)
				}
			}
			if got := p.failed(tc.poison); got != tc.maxAttempts {
				t.Errorf("event %d failed %d times, want %d", tc.poison, got, tc.maxAttempts)
			}
			if c, sum := totals(t, db); c != tc.count || sum != tc.sum {
				t.Errorf("read model: %d pings, sum %d; want %d, %d", c, sum, tc.count, tc.sum)
			}
		})
	}
}
