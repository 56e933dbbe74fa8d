package saga_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/saga"
)

// The test domain: a process started by Opened, bumped by Bumped, ended
// by Closed; it pings on every event and expires after 15 minutes.
type (
	Opened struct{ Case string }
	Bumped struct{ Case string }
	Closed struct{ Case string }
	Ping   struct{ Case string }
	Expire struct{ Case string }
)

func (Opened) EventType() string   { return "Opened" }
func (Bumped) EventType() string   { return "Bumped" }
func (Closed) EventType() string   { return "Closed" }
func (Ping) CommandType() string   { return "Ping" }
func (Expire) CommandType() string { return "Expire" }

type caseState struct {
	Bumps int
}

func newCaseSaga(name string) *saga.Saga[caseState] {
	s := saga.New[caseState](name)
	saga.On(s, func(e Opened) string { return e.Case }, func(_ context.Context, sc *saga.Scope[caseState], e Opened) error {
		sc.Dispatch(Ping{Case: e.Case})
		sc.Schedule("expire", 15*time.Minute)
		return nil
	}, saga.Starts())
	saga.On(s, func(e Bumped) string { return e.Case }, func(_ context.Context, sc *saga.Scope[caseState], e Bumped) error {
		sc.State.Bumps++
		sc.Dispatch(Ping{Case: e.Case})
		return nil
	})
	saga.On(s, func(e Closed) string { return e.Case }, func(context.Context, *saga.Scope[caseState], Closed) error {
		return nil
	}, saga.Ends())
	saga.OnDeadline(s, "expire", func(_ context.Context, sc *saga.Scope[caseState], _ saga.Deadline) error {
		sc.Dispatch(Expire{Case: sc.ID()})
		sc.End()
		return nil
	})
	return s
}

func env(e eventsource.Event) eventsource.Envelope {
	en := eventsource.NewEnvelope(e)
	en.AggregateType, en.AggregateID, en.Version = "Case", "c", 1
	return en
}

// recorder is a Dispatcher that records what it receives.
type recorder struct {
	mu   sync.Mutex
	cmds []saga.PendingCommand
	fail func(saga.PendingCommand) error
}

func (r *recorder) Dispatch(ctx context.Context, c saga.PendingCommand) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(c); err != nil {
			return err
		}
	}
	r.cmds = append(r.cmds, c)
	return nil
}

func (r *recorder) all() []saga.PendingCommand {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.cmds)
}

func (r *recorder) count(typ string) int {
	n := 0
	for _, c := range r.all() {
		if c.Type == typ {
			n++
		}
	}
	return n
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// backend opens handles on one database: each call to open is a new
// handle, as another process would have.
type backend struct {
	name string
	open func(t *testing.T) saga.Store
}

func backends(t *testing.T, sagaName string) []backend {
	t.Helper()
	return []backend{
		{"memory", func() func(*testing.T) saga.Store {
			m := saga.NewMemoryStore()
			return func(*testing.T) saga.Store { return m }
		}()},
		{"sqlite", func() func(*testing.T) saga.Store {
			path := filepath.Join(t.TempDir(), "saga.db")
			return func(t *testing.T) saga.Store {
				s, err := saga.OpenSQLite(context.Background(), path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
		}()},
		{"postgres", func(t *testing.T) saga.Store {
			pool := postgresPool(t)
			s, err := saga.NewPostgresStore(context.Background(), pool)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				for _, table := range []string{"saga_instances", "saga_deadlines"} {
					if _, err := pool.Exec(context.Background(), "DELETE FROM "+table+" WHERE saga = $1", sagaName); err != nil {
						t.Errorf("cleanup %s: %v", table, err)
					}
				}
			})
			return s
		}},
	}
}

func postgresPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := testenv.URL(t, "EVENTSOURCE_POSTGRES_URL", "set it to a PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func uniqueName(prefix string) string { return prefix + "-" + uuid.NewString()[:8] }

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isPermanent(err error) bool { return errors.Is(err, bus.ErrPermanent) }
