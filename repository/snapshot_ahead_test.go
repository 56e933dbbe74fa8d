package repository_test

import (
	"testing"

	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/repository"
)

// A snapshot at a version the stream does not reach (the events restored
// from an older backup than the snapshots, a stream erased and begun
// again) describes events that do not exist. Load must not trust it: the
// aggregate would claim that version, and every Save would conflict for
// ever, however often the caller reloads and retries.
func TestSnapshotAheadOfTheStreamIsIgnored(t *testing.T) {
	ctx := t.Context()
	store := eventstore.NewMemory()
	snaps := eventstore.NewMemorySnapshots()
	repo := repository.New(store, nil, newAccount, repository.WithSnapshots(snaps, 100), quiet())
	open(t, repo, "acc-1", 1, 2, 3, 4) // 5 events, no snapshot yet

	// The snapshot of a later state: version 10, balance 1000.
	ahead := newAccount()
	ahead.Owner, ahead.Balance = "ada", 1000
	data, err := ahead.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.SaveSnapshot(ctx, eventstore.Snapshot{StreamID: "Account-acc-1", AggregateType: "Account",
		AggregateID: "acc-1", Version: 10, SchemaVersion: 1, Data: data}); err != nil {
		t.Fatal(err)
	}

	a, err := repo.Load(ctx, "acc-1")
	if err != nil {
		t.Fatal(err)
	}
	if a.Version() != 5 || a.Balance != 10 || a.applied != 5 {
		t.Fatalf("loaded version %d, balance %d after applying %d events; want 5, 10, 5 (the stream replayed, the snapshot ignored)",
			a.Version(), a.Balance, a.applied)
	}
	aggregate.Raise(a, Deposited{Cents: 1})
	if err := repo.Save(ctx, a); err != nil {
		t.Fatalf("Save after Load: %v", err)
	}

	// A snapshot at the stream's very version is used as it is (in a
	// snapshot store of its own: the first keeps its version 10).
	exact := newAccount()
	exact.Owner, exact.Balance = "ada", 11
	if data, err = exact.MarshalSnapshot(); err != nil {
		t.Fatal(err)
	}
	snaps2 := eventstore.NewMemorySnapshots()
	if err := snaps2.SaveSnapshot(ctx, eventstore.Snapshot{StreamID: "Account-acc-1", AggregateType: "Account",
		AggregateID: "acc-1", Version: 6, SchemaVersion: 1, Data: data}); err != nil {
		t.Fatal(err)
	}
	repo2 := repository.New(store, nil, newAccount, repository.WithSnapshots(snaps2, 100), quiet())
	b, err := repo2.Load(ctx, "acc-1")
	if err != nil {
		t.Fatal(err)
	}
	if b.Version() != 6 || b.Balance != 11 || b.applied != 0 {
		t.Fatalf("from a snapshot at the stream's version: version %d, balance %d, applied %d; want 6, 11, 0",
			b.Version(), b.Balance, b.applied)
	}
}
