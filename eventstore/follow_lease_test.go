package eventstore_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/storetest"
)

// flakyLease is a MemoryLease whose renewals can be made to fail, as when
// the holder loses its connection to the lease's database.
type flakyLease struct {
	*eventstore.MemoryLease
	failRenew atomic.Bool
}

func (l *flakyLease) Renew(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if l.failRenew.Load() {
		return false, context.DeadlineExceeded
	}
	return l.MemoryLease.Renew(ctx, name, owner, ttl)
}

// A holder whose lease is lost while its handler runs must not save its
// checkpoint afterwards: the next holder may have saved a later one
// already, which the deposed holder's save would move back (and every
// event between would be applied again).
func TestDeposedHolderSavesNoCheckpoint(t *testing.T) {
	ctx := t.Context()
	store, checkpoints := eventstore.NewMemory(), eventstore.NewMemoryCheckpoints()
	env := eventsource.NewEnvelope(storetest.Deposited{Amount: 1})
	env.AggregateType, env.AggregateID = "Test", "a"
	if _, err := store.Append(ctx, eventsource.StreamID("Test", "a"), eventstore.NoStream, []eventsource.Envelope{env}); err != nil {
		t.Fatal(err)
	}
	lease := &flakyLease{MemoryLease: eventstore.NewMemoryLease()}
	f := &eventstore.Follower{Name: "deposed", Store: store, Checkpoints: checkpoints,
		Lease: lease, LeaseTTL: 300 * time.Millisecond, Owner: "a"}
	lost := make(chan struct{})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- f.Follow(runCtx, 10*time.Millisecond, func(ctx context.Context, _ eventsource.Envelope) error {
			lease.failRenew.Store(true)
			<-ctx.Done() // the handler outlives the hold, as a slow one may
			if cause := context.Cause(ctx); cause == eventstore.ErrLeaseLost {
				close(lost)
				lease.failRenew.Store(false)
				stop() // one application is enough for the test
			}
			return nil
		})
	}()
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the lease was never lost")
	}
	if err := <-done; err != nil {
		t.Logf("Follow: %v", err)
	}
	p, err := checkpoints.Checkpoint(ctx, "deposed")
	if err != nil {
		t.Fatal(err)
	}
	if p != 0 {
		t.Errorf("checkpoint %d saved after the lease was lost, want none", p)
	}
}

// cancellingLease grants the lease, then ends the follower's ctx, as a
// shutdown that arrives while the lease is being acquired.
type cancellingLease struct {
	*eventstore.MemoryLease
	cancel context.CancelFunc
}

func (l *cancellingLease) TryAcquire(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	ok, err := l.MemoryLease.TryAcquire(ctx, name, owner, ttl)
	l.cancel()
	return ok, err
}

// A lease acquired as the follower's ctx ends is released at once, so a
// standby takes over without waiting for the TTL.
func TestLeaseAcquiredAtStopIsReleased(t *testing.T) {
	runCtx, cancel := context.WithCancel(t.Context())
	lease := &cancellingLease{MemoryLease: eventstore.NewMemoryLease(), cancel: cancel}
	f := &eventstore.Follower{Name: "stopping", Store: eventstore.NewMemory(), Checkpoints: eventstore.NewMemoryCheckpoints(),
		Lease: lease, LeaseTTL: time.Minute, Owner: "a"}
	if err := f.Follow(runCtx, 10*time.Millisecond, func(context.Context, eventsource.Envelope) error { return nil }); err != nil {
		t.Fatal(err)
	}
	ok, err := lease.MemoryLease.TryAcquire(t.Context(), "stopping", "b", time.Minute)
	if err != nil || !ok {
		t.Errorf("another owner cannot take the lease after the follower stopped (%v, %v): it was kept for the TTL", ok, err)
	}
}

// Follow with no interval polls at DefaultPollInterval rather than
// panicking on a zero ticker.
func TestFollowWithoutInterval(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	store := eventstore.NewMemory()
	env := eventsource.NewEnvelope(storetest.Deposited{Amount: 1})
	env.AggregateType, env.AggregateID = "Test", "a"
	if _, err := store.Append(ctx, eventsource.StreamID("Test", "a"), eventstore.NoStream, []eventsource.Envelope{env}); err != nil {
		t.Fatal(err)
	}
	f := &eventstore.Follower{Name: "no-interval", Store: store, Checkpoints: eventstore.NewMemoryCheckpoints()}
	err := f.Follow(ctx, 0, func(context.Context, eventsource.Envelope) error {
		cancel()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := f.Status(); st.Position != 1 {
		t.Errorf("position %d after one event, want 1", st.Position)
	}
}
