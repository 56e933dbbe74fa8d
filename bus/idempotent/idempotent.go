// Package idempotent is a bus.Middleware that runs a handler at most once
// per event ID, for side effects that cannot be repeated (an e-mail, a
// charge): the buses deliver at least once. Keys are per handler name, so
// two handlers of one event each run once; they live in a Store: memory,
// SQLite (NewSQLite) or PostgreSQL (NewPostgres), shared by every process
// of a consumer group.
//
// A delivery claims its key for a while (the hold), runs the handler and
// marks the key done; a failure or a panic releases the claim so a retry
// runs it again. A duplicate delivered while the first runs gets
// ErrInProgress (the bus retries it later); one delivered after is
// skipped. A process that dies mid-handler leaves its claim to expire
// after the hold: a delivery after that runs the handler again, the only
// case it can run twice (make the hold longer than the handler can take).
//
// The bus's own retries of that event usually end before the hold does
// (the buses' defaults retry for seconds, the default hold is minutes):
// each gets ErrInProgress, and the event is dead-lettered. Replaying it
// from the dead letters once the hold has passed runs the handler; a
// hold close to the handler's longest run shortens that wait.
package idempotent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// DefaultHold is how long a claim lasts when Middleware is not told.
const DefaultHold = 5 * time.Minute

// storeTimeout bounds the store's calls made after the handler returned,
// which do not inherit its ctx.
const storeTimeout = 5 * time.Second

// ErrInProgress is returned for a duplicate delivered while its first
// delivery still runs: the bus retries it.
var ErrInProgress = errors.New("idempotent: event is being handled by another delivery")

// Outcome is the result of a Claim.
type Outcome int

// Outcomes of a Claim.
const (
	Claimed Outcome = iota // the caller runs the handler
	Done                   // handled already: skip
	Busy                   // another delivery holds the claim
)

// Store keeps a key per (handler, event ID).
type Store interface {
	// Claim claims the key until now+hold if it is neither done nor
	// claimed by another delivery.
	Claim(ctx context.Context, handler, eventID string, hold time.Duration) (Outcome, error)
	// Complete marks the key done.
	Complete(ctx context.Context, handler, eventID string) error
	// Release drops a claim that is not done, so a retry may run.
	Release(ctx context.Context, handler, eventID string) error
}

// Middleware runs the handlers it wraps at most once per event for the
// handler name given (the subscription's name, as a rule).
func Middleware(s Store, handler string, hold time.Duration) bus.Middleware {
	if hold <= 0 {
		hold = DefaultHold
	}
	return func(next bus.Handler) bus.Handler {
		return bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
			id := env.ID.String()
			start := time.Now()
			switch out, err := s.Claim(ctx, handler, id, hold); {
			case err != nil:
				return err
			case out == Done:
				return nil
			case out == Busy:
				return fmt.Errorf("%w: %s %s", ErrInProgress, handler, id)
			}
			// Past the hold, the claim may be another delivery's now:
			// releasing it would let a third run beside that one.
			release := func() error {
				if time.Since(start) >= hold {
					return nil
				}
				// With a ctx of its own: the handler's may be the one
				// that ended.
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
				defer cancel()
				return s.Release(rctx, handler, id)
			}
			returned := false
			defer func() {
				// A panic: the bus recovers it and retries, which must
				// find the key free, not held for the whole hold.
				if !returned {
					_ = release()
				}
			}()
			err := next.Handle(ctx, env)
			returned = true
			if err != nil {
				return errors.Join(err, release())
			}
			// Bounded, not tied to ctx: the side effect happened, so
			// shutting down must not skip marking it, nor wait forever
			// on a store that hangs.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
			defer cancel()
			return s.Complete(cctx, handler, id)
		})
	}
}

// Purger deletes the keys a handler marked done before a time. A
// duplicate of a purged key's event runs the handler again, so the
// retention must outlast every redelivery and replay of an event (the
// dead letters kept, a projection rebuilt from the store does not count:
// it does not go through the bus). Without purging, the keys of every
// event ever handled are kept.
type Purger interface {
	PurgeDone(ctx context.Context, handler string, doneBefore time.Time) (int64, error)
}

var (
	_ Purger = (*Memory)(nil)
	_ Purger = (*SQLite)(nil)
	_ Purger = (*Postgres)(nil)
)

// Memory is a Store in memory, for one process and tests.
type Memory struct {
	mu   sync.Mutex
	keys map[[2]string]memoryKey
	now  func() time.Time
}

type memoryKey struct {
	done  bool
	until time.Time // claimed until; once done, when it was done
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return &Memory{keys: map[[2]string]memoryKey{}, now: time.Now} }

// Claim implements Store.
func (m *Memory) Claim(_ context.Context, handler, eventID string, hold time.Duration) (Outcome, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, now := [2]string{handler, eventID}, m.now()
	switch cur, ok := m.keys[k]; {
	case ok && cur.done:
		return Done, nil
	case ok && cur.until.After(now):
		return Busy, nil
	}
	m.keys[k] = memoryKey{until: now.Add(hold)}
	return Claimed, nil
}

// Complete implements Store.
func (m *Memory) Complete(_ context.Context, handler, eventID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[[2]string{handler, eventID}] = memoryKey{done: true, until: m.now()}
	return nil
}

// PurgeDone implements Purger.
func (m *Memory) PurgeDone(_ context.Context, handler string, doneBefore time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for k, v := range m.keys {
		if k[0] == handler && v.done && v.until.Before(doneBefore) {
			delete(m.keys, k)
			n++
		}
	}
	return n, nil
}

// Release implements Store.
func (m *Memory) Release(_ context.Context, handler, eventID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k := [2]string{handler, eventID}; !m.keys[k].done {
		delete(m.keys, k)
	}
	return nil
}
