// Package leasetest is the suite every eventstore.Lease passes: one holder
// at a time, takeover after expiry, renewal, release, and a race between
// owners that only one wins.
//
//	func TestLease(t *testing.T) {
//		leasetest.Run(t, func(t *testing.T) eventstore.Lease { return newLease(t) })
//	}
//
// The lease may be shared between subtests: each uses fresh names.
package leasetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource/eventstore"
)

// deadline bounds every wait.
const deadline = 30 * time.Second

// ttl is the hold the expiry cases use: long enough that a loaded machine
// renews in time, short enough to wait for.
const ttl = 300 * time.Millisecond

// Run runs the suite. open is called once per subtest.
func Run(t *testing.T, open func(t *testing.T) eventstore.Lease) {
	tests := []struct {
		name string
		fn   func(t *testing.T, l eventstore.Lease)
	}{
		{"OneHolder", testOneHolder},
		{"TakeoverAfterExpiry", testTakeover},
		{"RenewKeepsIt", testRenew},
		{"RenewAfterTakeoverFails", testRenewAfterTakeover},
		{"ReleaseFreesIt", testRelease},
		{"RaceHasOneWinner", testRace},
		{"HoldingEndsWhenTakenOver", testHoldingLost},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

func name() string { return "leasetest-" + uuid.NewString() }

func acquire(t *testing.T, l eventstore.Lease, name, owner string, ttl time.Duration) bool {
	t.Helper()
	ok, err := l.TryAcquire(t.Context(), name, owner, ttl)
	if err != nil {
		t.Fatalf("TryAcquire(%s, %s): %v", name, owner, err)
	}
	return ok
}

func testOneHolder(t *testing.T, l eventstore.Lease) {
	n, other := name(), name()
	if !acquire(t, l, n, "a", time.Minute) {
		t.Fatal("a free lease was refused")
	}
	if acquire(t, l, n, "b", time.Minute) {
		t.Fatal("b took a lease a holds")
	}
	if !acquire(t, l, n, "a", time.Minute) {
		t.Fatal("the holder could not take its own lease again")
	}
	if !acquire(t, l, other, "b", time.Minute) {
		t.Fatal("another name was refused: names must be independent")
	}
}

// waitAcquire tries until owner holds n and returns how long it took.
func waitAcquire(t *testing.T, l eventstore.Lease, n, owner string) time.Duration {
	t.Helper()
	start := time.Now()
	for !acquire(t, l, n, owner, time.Minute) {
		if time.Since(start) > deadline {
			t.Fatalf("%s never took %s", owner, n)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by deadline
	}
	return time.Since(start)
}

func testTakeover(t *testing.T, l eventstore.Lease) {
	n := name()
	if !acquire(t, l, n, "a", ttl) {
		t.Fatal("a free lease was refused")
	}
	start := time.Now()
	waitAcquire(t, l, n, "b")
	// Database clocks run at whole-millisecond precision.
	if took := time.Since(start); took < ttl-20*time.Millisecond {
		t.Errorf("b took the lease %v after a's hold of %v began: before it expired", took, ttl)
	}
}

func testRenew(t *testing.T, l eventstore.Lease) {
	n := name()
	if !acquire(t, l, n, "a", ttl) {
		t.Fatal("a free lease was refused")
	}
	// Renew with a long hold, then check b cannot take it after the
	// first hold's expiry has passed.
	ok, err := l.Renew(t.Context(), n, "a", time.Minute)
	if err != nil || !ok {
		t.Fatalf("Renew by the holder = %v, %v; want true", ok, err)
	}
	end := time.Now().Add(2 * ttl)
	for time.Now().Before(end) {
		if acquire(t, l, n, "b", ttl) {
			t.Fatal("b took a renewed lease")
		}
		time.Sleep(20 * time.Millisecond) // polling interval over a bounded window
	}
	if ok, err := l.Renew(t.Context(), n, "b", time.Minute); err != nil || ok {
		t.Fatalf("Renew by a non-holder = %v, %v; want false", ok, err)
	}
}

func testRenewAfterTakeover(t *testing.T, l eventstore.Lease) {
	n := name()
	if !acquire(t, l, n, "a", ttl) {
		t.Fatal("a free lease was refused")
	}
	waitAcquire(t, l, n, "b")
	if ok, err := l.Renew(t.Context(), n, "a", time.Minute); err != nil || ok {
		t.Fatalf("Renew by the former holder after a takeover = %v, %v; want false", ok, err)
	}
}

func testRelease(t *testing.T, l eventstore.Lease) {
	n := name()
	if !acquire(t, l, n, "a", time.Minute) {
		t.Fatal("a free lease was refused")
	}
	if err := l.Release(t.Context(), n, "b"); err != nil {
		t.Fatalf("Release by a non-holder: %v", err)
	}
	if acquire(t, l, n, "b", time.Minute) {
		t.Fatal("a non-holder's Release freed the lease")
	}
	if err := l.Release(t.Context(), n, "a"); err != nil {
		t.Fatal(err)
	}
	if !acquire(t, l, n, "b", time.Minute) {
		t.Fatal("a released lease was refused")
	}
	if ok, err := l.Renew(t.Context(), n, "a", time.Minute); err != nil || ok {
		t.Fatalf("Renew after Release = %v, %v; want false", ok, err)
	}
}

func testRace(t *testing.T, l eventstore.Lease) {
	n := name()
	const owners = 8
	var won atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, owners)
	for i := range owners {
		wg.Go(func() {
			ok, err := l.TryAcquire(context.Background(), n, fmt.Sprint("owner-", i), time.Minute)
			if err != nil {
				errs <- err
			}
			if ok {
				won.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if w := won.Load(); w != 1 {
		t.Fatalf("%d owners hold the lease at once, want 1", w)
	}
}

// A Holding whose lease another owner took (here: after a release behind
// its back) ends its context with ErrLeaseLost at its next renewal.
func testHoldingLost(t *testing.T, l eventstore.Lease) {
	n := name()
	h, err := eventstore.AcquireLease(t.Context(), l, n, "a", ttl)
	if err != nil || h == nil {
		t.Fatalf("AcquireLease = %v, %v", h, err)
	}
	defer h.Release()
	if other, err := eventstore.AcquireLease(t.Context(), l, n, "b", ttl); err != nil || other != nil {
		t.Fatalf("a second owner's AcquireLease = %v, %v; want nil, nil", other, err)
	}
	if err := l.Release(t.Context(), n, "a"); err != nil {
		t.Fatal(err)
	}
	if !acquire(t, l, n, "b", time.Minute) {
		t.Fatal("b could not take a released lease")
	}
	select {
	case <-h.Context().Done():
	case <-time.After(deadline):
		t.Fatal("the holding did not notice it lost the lease")
	}
	if c := context.Cause(h.Context()); c != eventstore.ErrLeaseLost {
		t.Fatalf("cause %v, want ErrLeaseLost", c)
	}
}
