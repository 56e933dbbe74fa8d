package eventstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// DefaultLeaseTTL is how long a lease is held without renewal when a
// Follower's LeaseTTL is not set: a dead holder's followers resume within
// about this long.
const DefaultLeaseTTL = 10 * time.Second

// ErrLeaseLost is the cause of a Holding's context when its holder could
// not renew the lease in time, or another owner took it.
var ErrLeaseLost = errors.New("eventstore: lease lost")

// Lease grants a name to one owner at a time, for a bounded time. Followers
// (the outbox relay, projection runners) use it so that at most one
// instance per name is active across processes, and another takes over
// when the holder dies: its hold expires, since nobody renews it.
//
// Implementations keep the expiry on one clock (the database's, for the
// SQL leases), so owners on several machines need no synchronised clocks;
// holders must stop acting before their own estimate of the expiry, which
// AcquireLease does for them.
type Lease interface {
	// TryAcquire makes owner the holder of name for ttl from now if the
	// name is free, its hold expired, or owner holds it already, and
	// reports whether owner holds it. It does not wait.
	TryAcquire(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	// Renew extends owner's hold of name to ttl from now. It reports false
	// when owner no longer holds it (another owner took it after it
	// expired, or it was released).
	Renew(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	// Release frees name if owner holds it, so another owner can take it
	// at once. Releasing what owner does not hold does nothing.
	Release(ctx context.Context, name, owner string) error
}

// DefaultOwner returns an owner ID unique to this process and call: the
// host name, the process ID and random bits.
func DefaultOwner() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// leaseCallTimeout bounds one call to a Lease made by a Holding.
const leaseCallTimeout = 5 * time.Second

// Holding is a lease held and kept renewed in the background. Its Context
// ends, with cause ErrLeaseLost, before the hold could have expired
// unrenewed, so work done under it stops before another owner can start.
type Holding struct {
	lease       Lease
	name, owner string
	ctx         context.Context
	cancel      context.CancelCauseFunc
	done        chan struct{}
	release     sync.Once
}

// AcquireLease tries once to take name for owner. When another owner holds
// it, it returns nil and no error. Otherwise the Holding renews the lease
// every third of ttl until Release is called, ctx ends, or a renewal
// fails to keep it.
func AcquireLease(ctx context.Context, l Lease, name, owner string, ttl time.Duration) (*Holding, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("eventstore: lease %q: ttl %v, want > 0", name, ttl)
	}
	start := time.Now()
	ok, err := callLease(ctx, func(ctx context.Context) (bool, error) { return l.TryAcquire(ctx, name, owner, ttl) })
	if err != nil {
		return nil, fmt.Errorf("eventstore: lease %q: acquire: %w", name, err)
	}
	if !ok {
		return nil, nil
	}
	hctx, cancel := context.WithCancelCause(ctx)
	h := &Holding{lease: l, name: name, owner: owner, ctx: hctx, cancel: cancel, done: make(chan struct{})}
	go h.keep(ttl, start)
	return h, nil
}

// Context ends when the lease is lost (cause ErrLeaseLost), released, or
// the context given to AcquireLease ends.
func (h *Holding) Context() context.Context { return h.ctx }

// Release stops renewing and frees the lease for another owner. It waits
// for the renewals to stop, and works after the Holding's context ended.
func (h *Holding) Release() {
	h.release.Do(func() {
		h.cancel(context.Canceled)
		<-h.done
		// Released without the caller's cancellation: a stopping holder
		// must still hand over at once rather than after the TTL.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(h.ctx), leaseCallTimeout)
		defer cancel()
		_ = h.lease.Release(ctx, h.name, h.owner)
	})
}

// keep renews the hold until the context ends. The hold is trusted until
// ttl after the request that last granted it was sent (earlier than the
// store granted it, so earlier than the store's expiry), less a margin for
// the two clocks' rates.
func (h *Holding) keep(ttl time.Duration, granted time.Time) {
	defer close(h.done)
	margin := ttl / 10
	expiry := time.AfterFunc(time.Until(granted.Add(ttl-margin)), func() { h.cancel(ErrLeaseLost) })
	defer expiry.Stop()
	every := ttl / 3
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		ok, err := callLease(h.ctx, func(ctx context.Context) (bool, error) { return h.lease.Renew(ctx, h.name, h.owner, ttl) })
		switch {
		case h.ctx.Err() != nil:
			return
		case err != nil:
			// Keep trying while the hold lasts; the expiry timer ends it.
			t.Reset(max(every/4, time.Millisecond))
			continue
		case !ok:
			h.cancel(ErrLeaseLost)
			return
		}
		expiry.Reset(time.Until(sent.Add(ttl - margin)))
		t.Reset(every)
	}
}

func callLease(ctx context.Context, call func(context.Context) (bool, error)) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, leaseCallTimeout)
	defer cancel()
	return call(ctx)
}

// MemoryLease is a Lease within one process, for tests and for the memory
// store. It is safe for concurrent use.
type MemoryLease struct {
	mu    sync.Mutex
	holds map[string]memoryHold
}

type memoryHold struct {
	owner   string
	expires time.Time
}

var _ Lease = (*MemoryLease)(nil)

// NewMemoryLease returns an empty MemoryLease.
func NewMemoryLease() *MemoryLease { return &MemoryLease{holds: make(map[string]memoryHold)} }

// TryAcquire implements Lease.
func (m *MemoryLease) TryAcquire(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if h, ok := m.holds[name]; ok && h.owner != owner && now.Before(h.expires) {
		return false, nil
	}
	m.holds[name] = memoryHold{owner: owner, expires: now.Add(ttl)}
	return true, nil
}

// Renew implements Lease.
func (m *MemoryLease) Renew(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if h, ok := m.holds[name]; !ok || h.owner != owner {
		return false, nil
	}
	m.holds[name] = memoryHold{owner: owner, expires: time.Now().Add(ttl)}
	return true, nil
}

// Release implements Lease.
func (m *MemoryLease) Release(ctx context.Context, name, owner string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if h, ok := m.holds[name]; ok && h.owner == owner {
		delete(m.holds, name)
	}
	return nil
}
