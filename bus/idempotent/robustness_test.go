package idempotent_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/idempotent"
)

func welcome() eventsource.Envelope {
	env := eventsource.NewEnvelope(Welcomed{Email: "a@example.com"})
	env.AggregateType, env.AggregateID, env.Version = "User", uuid.NewString(), 1
	return env
}

// handle runs h through the middleware, turning a panic into an error as
// every bus does.
func handle(ctx context.Context, h bus.Handler, env eventsource.Envelope) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = bus.ErrHandlerPanic
		}
	}()
	return h.Handle(ctx, env)
}

// TestPanicReleasesClaim: a handler that panics is retried by the bus like
// one that fails; the retry must run it, not find the key held for the
// whole hold.
func TestPanicReleasesClaim(t *testing.T) {
	name := "panic-" + uuid.NewString()[:8]
	for store, open := range stores(t, name) {
		t.Run(store, func(t *testing.T) {
			s := open(t)
			var calls atomic.Int64
			h := idempotent.Middleware(s, name, time.Hour)(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
				if calls.Add(1) == 1 {
					panic("template missing")
				}
				return nil
			}))
			env := welcome()
			if err := handle(context.Background(), h, env); !errors.Is(err, bus.ErrHandlerPanic) {
				t.Fatalf("first delivery: %v, want the panic", err)
			}
			if err := handle(context.Background(), h, env); err != nil {
				t.Fatalf("retry after a panic: %v, want it run", err)
			}
			if n := calls.Load(); n != 2 {
				t.Fatalf("handler ran %d times, want 2", n)
			}
		})
	}
}

// TestHandlerNamesIndependent: one event ID under two handler names is two
// keys; completing, failing or holding one leaves the other alone.
func TestHandlerNamesIndependent(t *testing.T) {
	a, b := "a-"+uuid.NewString()[:8], "b-"+uuid.NewString()[:8]
	for store, open := range stores(t, a, b) {
		t.Run(store, func(t *testing.T) {
			s, ctx, id := open(t), context.Background(), uuid.NewString()
			for _, h := range []string{a, b} {
				if out, err := s.Claim(ctx, h, id, time.Hour); err != nil || out != idempotent.Claimed {
					t.Fatalf("claim %s: %v %v, want Claimed", h, out, err)
				}
			}
			if err := s.Complete(ctx, a, id); err != nil {
				t.Fatal(err)
			}
			if out, _ := s.Claim(ctx, b, id, time.Hour); out != idempotent.Busy {
				t.Fatalf("b after a completed: %v, want Busy", out)
			}
			if err := s.Release(ctx, b, id); err != nil {
				t.Fatal(err)
			}
			if out, _ := s.Claim(ctx, a, id, time.Hour); out != idempotent.Done {
				t.Fatalf("a after b released: %v, want Done", out)
			}
			if out, _ := s.Claim(ctx, b, id, time.Hour); out != idempotent.Claimed {
				t.Fatalf("b after its release: %v, want Claimed", out)
			}
		})
	}
}

// TestExpiredClaimTakenOver: a claim whose hold passed is taken by the next
// delivery; the late first delivery then failing must not release the new
// holder's claim, else a third delivery runs the handler beside the second.
func TestExpiredClaimTakenOver(t *testing.T) {
	name := "expiry-" + uuid.NewString()[:8]
	for store, open := range stores(t, name) {
		t.Run(store, func(t *testing.T) {
			s, ctx, env := open(t), context.Background(), welcome()
			const hold = 50 * time.Millisecond
			var running atomic.Int64
			release := map[int64]chan error{1: make(chan error), 2: make(chan error)}
			t.Cleanup(func() { close(release[1]); close(release[2]) }) // unblock them on a failure
			run := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
				n := running.Add(1)
				if ch, ok := release[n]; ok {
					return <-ch
				}
				return nil
			})
			// The first delivery holds briefly; the others for long, so
			// that only the first's claim expires during the test.
			short, long := idempotent.Middleware(s, name, hold)(run), idempotent.Middleware(s, name, time.Hour)(run)
			first := make(chan error, 1)
			go func() { first <- short.Handle(ctx, env) }()
			waitFor(t, "the first delivery runs", func() bool { return running.Load() == 1 })
			// Redelivered until the first's hold expires: then the second
			// takes the key over and runs (and blocks).
			second := make(chan error, 1)
			for running.Load() < 2 {
				go func() { second <- long.Handle(ctx, env) }()
				waitFor(t, "the second delivery returns or runs", func() bool { return len(second) > 0 || running.Load() == 2 })
				if running.Load() < 2 {
					if err := <-second; !errors.Is(err, idempotent.ErrInProgress) {
						t.Fatalf("second delivery within the hold: %v, want ErrInProgress", err)
					}
				}
			}
			// The first delivery, past its hold, fails.
			release[1] <- errors.New("smtp timeout")
			if err := <-first; err == nil {
				t.Fatal("first delivery: nil, want its error")
			}
			// The second still runs: a third delivery must wait.
			if err := long.Handle(ctx, env); !errors.Is(err, idempotent.ErrInProgress) {
				t.Errorf("third delivery while the second runs: %v, want ErrInProgress (runs: %d)", err, running.Load())
			}
			release[2] <- nil
			if err := <-second; err != nil {
				t.Fatalf("second delivery: %v", err)
			}
		})
	}
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// failingStore is a Store whose methods return errs, or block until their
// ctx ends when block is set.
type failingStore struct {
	claim, complete, release error
	block                    bool
}

func (f *failingStore) Claim(context.Context, string, string, time.Duration) (idempotent.Outcome, error) {
	return idempotent.Claimed, f.claim
}

func (f *failingStore) Complete(ctx context.Context, _, _ string) error {
	if f.block {
		<-ctx.Done()
		return ctx.Err()
	}
	return f.complete
}

func (f *failingStore) Release(context.Context, string, string) error { return f.release }

// TestErrorsMatch: a store's and a handler's errors reach the bus intact
// for errors.Is (bus.Permanent included), and a store that is down fails
// the delivery instead of skipping it.
func TestErrorsMatch(t *testing.T) {
	down := errors.New("connection refused")
	smtp := errors.New("smtp down")
	var ran atomic.Int64
	ok := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { ran.Add(1); return nil })
	fail := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return bus.Permanent(smtp) })
	ctx, env := context.Background(), welcome()

	if err := idempotent.Middleware(&failingStore{claim: down}, "h", 0)(ok).Handle(ctx, env); !errors.Is(err, down) || ran.Load() != 0 {
		t.Errorf("claim failing: %v (ran %d), want %v and no run", err, ran.Load(), down)
	}
	err := idempotent.Middleware(&failingStore{release: down}, "h", 0)(fail).Handle(ctx, env)
	if !errors.Is(err, smtp) || !errors.Is(err, bus.ErrPermanent) || !errors.Is(err, down) {
		t.Errorf("handler and release failing: %v, want it to match both and ErrPermanent", err)
	}
	if err := idempotent.Middleware(&failingStore{complete: down}, "h", 0)(ok).Handle(ctx, env); !errors.Is(err, down) {
		t.Errorf("complete failing: %v, want %v", err, down)
	}

	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := idempotent.NewSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	ran.Store(0)
	if err := idempotent.Middleware(s, "h", 0)(ok).Handle(ctx, env); err == nil || ran.Load() != 0 {
		t.Errorf("closed database: %v (ran %d), want an error and no run", err, ran.Load())
	}
}

// TestCompleteBounded: a store that hangs after the handler succeeded must
// not hold the delivery forever (the bus's shutdown waits for it).
func TestCompleteBounded(t *testing.T) {
	h := idempotent.Middleware(&failingStore{block: true}, "h", 0)(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return nil }))
	done := make(chan error, 1)
	go func() { done <- h.Handle(context.Background(), welcome()) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("complete timing out: %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the delivery still waits on Complete after 30s")
	}
}
