package idempotent_test

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

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "modernc.org/sqlite"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/idempotent"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

type Welcomed struct{ Email string }

func (Welcomed) EventType() string { return "Welcomed" }

func stores(t *testing.T, handlers ...string) map[string]func(t *testing.T) idempotent.Store {
	return map[string]func(t *testing.T) idempotent.Store{
		"memory": func(*testing.T) idempotent.Store { return idempotent.NewMemory() },
		"sqlite": func(t *testing.T) idempotent.Store {
			db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "keys.db")+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			s, err := idempotent.NewSQLite(context.Background(), db)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"postgres": func(t *testing.T) idempotent.Store {
			url := testenv.URL(t, "EVENTSOURCE_POSTGRES_URL", "set it to a PostgreSQL URL")
			pool, err := pgxpool.New(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				for _, h := range handlers {
					_, _ = pool.Exec(context.Background(), "DELETE FROM idempotency_keys WHERE handler = $1", h)
				}
				pool.Close()
			})
			s, err := idempotent.NewPostgres(context.Background(), pool)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

// TestOncePerEventPerHandler: an event delivered many times, concurrently
// too, runs each handler once; a failure lets a retry run it.
func TestOncePerEventPerHandler(t *testing.T) {
	mail, audit := "mail-"+uuid.NewString()[:8], "audit-"+uuid.NewString()[:8]
	for name, open := range stores(t, mail, audit) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			var sent, audited atomic.Int64
			var failNext atomic.Bool
			b := bus.NewInProcess(bus.WithLogger(slog.New(slog.DiscardHandler)))
			defer b.Close(ctx)
			if _, err := bus.On(b, func(context.Context, Welcomed, eventsource.Envelope) error {
				if failNext.CompareAndSwap(true, false) {
					return errors.New("smtp down")
				}
				sent.Add(1)
				return nil
			}, bus.WithName(mail), bus.WithMiddleware(idempotent.Middleware(s, mail, 0))); err != nil {
				t.Fatal(err)
			}
			if _, err := bus.On(b, func(context.Context, Welcomed, eventsource.Envelope) error {
				audited.Add(1)
				return nil
			}, bus.WithName(audit), bus.WithMiddleware(idempotent.Middleware(s, audit, 0))); err != nil {
				t.Fatal(err)
			}
			const events, copies = 5, 4
			var wg sync.WaitGroup
			for i := range events {
				env := eventsource.NewEnvelope(Welcomed{Email: fmt.Sprint(i)})
				env.AggregateType, env.AggregateID, env.Version = "User", fmt.Sprint(i), 1
				for range copies {
					wg.Go(func() { _ = b.Publish(ctx, env) })
				}
			}
			wg.Wait()
			if sent.Load() != events || audited.Load() != events {
				t.Fatalf("sent %d, audited %d; want %d each", sent.Load(), audited.Load(), events)
			}
			// A failing first delivery, then a retry.
			failNext.Store(true)
			env := eventsource.NewEnvelope(Welcomed{Email: "late"})
			env.AggregateType, env.AggregateID, env.Version = "User", "late", 1
			for range 3 {
				_ = b.Publish(ctx, env)
			}
			if sent.Load() != events+1 {
				t.Fatalf("sent %d after a failure and retries, want %d", sent.Load(), events+1)
			}
		})
	}
}
