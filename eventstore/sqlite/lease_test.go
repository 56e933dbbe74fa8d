package sqlite_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/leasetest"
)

func TestLease(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "events.db"))
	leasetest.Run(t, func(t *testing.T) eventstore.Lease { return s.Lease() })
}

// Two stores on one file (two processes) share the leases.
func TestLeaseSharedByFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	a, b := open(t, path).Lease(), open(t, path).Lease()
	if ok, err := a.TryAcquire(t.Context(), "relay", "a", time.Minute); err != nil || !ok {
		t.Fatalf("a: %v %v", ok, err)
	}
	if ok, err := b.TryAcquire(t.Context(), "relay", "b", time.Minute); err != nil || ok {
		t.Fatalf("b took a lease a holds through another connection: %v %v", ok, err)
	}
}
