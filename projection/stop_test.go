package projection_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/projection"
)

// stopPings waits, on its first try of Ping block, for ctx to end and
// returns ctx's error, as a projection that honours its ctx does when the
// runner stops mid-event. Every other try applies.
type stopPings struct {
	pingTable
	block   int
	entered chan struct{}
	tried   bool
}

func (s *stopPings) try(ctx context.Context, env eventsource.Envelope) error {
	if env.Event.(bustest.Ping).N == s.block && !s.tried {
		s.tried = true
		close(s.entered)
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (s *stopPings) Handle(ctx context.Context, env eventsource.Envelope) error {
	return s.try(ctx, env)
}

func (s *stopPings) Apply(ctx context.Context, tx *sql.Tx, env eventsource.Envelope) error {
	if err := s.try(ctx, env); err != nil {
		return err
	}
	return s.pingTable.Apply(ctx, tx, env)
}

// A graceful stop that interrupts the projection is not a failure of the
// event: even on its last allowed attempt, the event is neither parked nor
// halted on, Run returns nil, and the next run applies it.
func TestStopMidEventIsNotAFailure(t *testing.T) {
	for _, kind := range []string{"plain", "sql"} {
		for _, park := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/park=%v", kind, park), func(t *testing.T) {
				store := openSQLite(t)
				appendPings(t, store, "s1", 1, 3)
				p := &stopPings{block: 2, entered: make(chan struct{})}
				opts := []projection.Option{projection.WithMaxAttempts(1), projection.WithBackoff(time.Millisecond, 2*time.Millisecond), quiet}
				if park {
					opts = append(opts, projection.WithParking(nil))
				}
				var (
					r   *projection.Runner
					db  *sql.DB
					cps = eventstore.NewMemoryCheckpoints()
				)
				if kind == "sql" {
					db = openReadModel(t, filepath.Join(t.TempDir(), "model.db"))
					var err error
					if r, err = projection.NewSQLRunner(t.Context(), "stop", p, store, db, opts...); err != nil {
						t.Fatal(err)
					}
				} else {
					r = projection.NewRunner("stop", p, store, cps, opts...)
				}
				done, cancel := startRun(t, r, time.Hour)
				select {
				case <-p.entered:
				case err := <-done:
					t.Fatalf("Run returned %v before trying event 2", err)
				case <-time.After(runTimeout):
					t.Fatal("the runner never tried event 2")
				}
				cancel()
				if err := runnerStopped(t, done); err != nil {
					t.Errorf("Run after a graceful stop = %v, want nil", err)
				}
				st := r.Status()
				if st.State != eventstore.StateStopped || st.Halted != nil || st.Parked != 0 {
					t.Errorf("status after a graceful stop = %+v; want stopped, not halted, nothing parked", st)
				}
				if got := parkedAt(t, r); len(got) != 0 {
					t.Errorf("parked on a graceful stop: %v", got)
				}
				// The next run applies event 2 and goes on.
				done, cancel = startRun(t, r, time.Hour)
				waitRunner(t, "the events after the stop", done, func() bool { return r.Status().Position == 3 })
				cancel()
				if err := runnerStopped(t, done); err != nil {
					t.Fatal(err)
				}
				if kind == "sql" {
					if c, sum := totals(t, db); c != 3 || sum != 6 {
						t.Errorf("read model: %d pings, sum %d; want 3, 6", c, sum)
					}
				}
			})
		}
	}
}

// A live runner wakes for every append, however it falls against the end
// of a pass: appended one at a time, each event is applied long before the
// hour-long poll.
func TestRunNeverMissesAWakeUp(t *testing.T) {
	for name, store := range map[string]eventstore.Store{"memory": eventstore.NewMemory(), "sqlite": openSQLite(t)} {
		t.Run(name, func(t *testing.T) {
			p := newSyncCounter()
			r := projection.NewRunner("wake", p, store, eventstore.NewMemoryCheckpoints(), quiet)
			done, cancel := startRun(t, r, time.Hour)
			var worst time.Duration
			for i := 1; i <= 200; i++ {
				start := time.Now()
				appendPings(t, store, "s1", i, 1)
				waitRunner(t, fmt.Sprintf("ping %d", i), done, func() bool { return r.Status().Position == int64(i) })
				worst = max(worst, time.Since(start))
			}
			t.Logf("worst append-to-applied latency: %v (poll: 1h)", worst)
			cancel()
			if err := runnerStopped(t, done); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A halted runner, run again once the projection is fixed, applies the
// event it halted on and no longer says halted.
func TestRunAfterHaltResumes(t *testing.T) {
	store := eventstore.NewMemory()
	appendPings(t, store, "s1", 1, 3)
	p := newFailOn(2)
	r := projection.NewRunner("resume", p, store, eventstore.NewMemoryCheckpoints(), projection.WithMaxAttempts(2),
		projection.WithBackoff(time.Millisecond, 2*time.Millisecond), quiet)
	done, _ := startRun(t, r, time.Hour)
	if err := runnerStopped(t, done); !errors.Is(err, projection.ErrHalted) {
		t.Fatalf("Run = %v, want a halt", err)
	}
	p.mu.Lock()
	delete(p.fail, 2)
	p.mu.Unlock()
	done, cancel := startRun(t, r, time.Hour)
	waitRunner(t, "live at the end", done, func() bool {
		st := r.Status()
		return st.Position == 3 && st.State == eventstore.StateLive
	})
	if st := r.Status(); st.Halted != nil || st.Attempts != 0 {
		t.Errorf("status = %+v; want no halt, no attempts", st)
	}
	if p.count(2) != 1 || p.count(3) != 1 {
		t.Errorf("events 2, 3 applied %d, %d times; want once each", p.count(2), p.count(3))
	}
	cancel()
	if err := runnerStopped(t, done); err != nil {
		t.Fatal(err)
	}
}

// slowTable applies each Ping after a pause, as a read model under load.
type slowTable struct {
	pingTable
	pause time.Duration
}

func (s *slowTable) Apply(ctx context.Context, tx *sql.Tx, env eventsource.Envelope) error {
	time.Sleep(s.pause)
	return s.pingTable.Apply(ctx, tx, env)
}

// A slow SQL runner commits every checkpoint interval within a batch; its
// Status follows those commits instead of standing still at the batch's
// start until the whole batch is done.
func TestSQLRunnerStatusFollowsCommitsWithinABatch(t *testing.T) {
	store := openSQLite(t)
	appendPings(t, store, "s1", 1, 400)
	db := openReadModel(t, filepath.Join(t.TempDir(), "model.db"))
	r, err := projection.NewSQLRunner(t.Context(), "slow", &slowTable{pause: 2 * time.Millisecond}, store, db,
		projection.WithCheckpoint(1000, 20*time.Millisecond), quiet)
	if err != nil {
		t.Fatal(err)
	}
	done, cancel := startRun(t, r, time.Hour)
	// Before the end of its one batch, the status shows positions the
	// runner committed inside it (it stood at 0, then jumped to 400).
	waitRunner(t, "a position within the batch", done, func() bool {
		p := r.Status().Position
		return p >= 20 && p < 400
	})
	waitRunner(t, "the end", done, func() bool { return r.Status().Position == 400 })
	cancel()
	if err := runnerStopped(t, done); err != nil {
		t.Fatal(err)
	}
}
