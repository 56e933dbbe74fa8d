package repository_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/repository"
)

func openSQLite(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[Opened](reg)
	eventsource.MustRegister[Deposited](reg)
	s, err := sqlite.Open(context.Background(), path, sqlite.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The memory test's scenario on the durable store, with the events and the
// snapshots in one SQLite file that is closed and reopened in between.
func TestSnapshotsOnSQLite(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	store := openSQLite(t, path)
	repo := repository.New(store, nil, newAccount, repository.WithSnapshots(store, 10), quiet())
	ones := func(n int) []int64 {
		d := make([]int64, n)
		for i := range d {
			d[i] = 1
		}
		return d
	}
	a := open(t, repo, "acc-1", ones(24)...) // 25 events: snapshot at 25
	for range 3 {
		aggregate.Raise(a, Deposited{Cents: 1})
	}
	if err := repo.Save(ctx, a); err != nil { // 28 events: no new snapshot
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	store = openSQLite(t, path)
	t.Cleanup(func() {
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	})
	snap, err := store.LoadSnapshot(ctx, "Account-acc-1")
	if err != nil || snap.Version != 25 || snap.SchemaVersion != 1 || snap.AggregateType != "Account" || snap.AggregateID != "acc-1" {
		t.Fatalf("snapshot after reopen = %+v, %v; want Account acc-1 at version 25, schema 1", snap, err)
	}
	repo = repository.New(store, nil, newAccount, repository.WithSnapshots(store, 10), quiet())
	loaded, err := repo.Load(ctx, "acc-1")
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Version() != 28 || loaded.Balance != 27 || loaded.Owner != "ada" || loaded.applied != 3 {
		t.Errorf("loaded version %d, balance %d, owner %q after applying %d events; want 28, 27, ada, 3 (replayed after the snapshot)",
			loaded.Version(), loaded.Balance, loaded.Owner, loaded.applied)
	}

	// A new snapshot schema ignores the stored snapshot and replays
	// everything; its next snapshot replaces the old one.
	newV2 := func() *Account { return &Account{schema: 2} }
	v2 := repository.New(store, nil, newV2, repository.WithSnapshots(store, 10), quiet())
	full, err := v2.Load(ctx, "acc-1")
	if err != nil {
		t.Fatal(err)
	}
	if full.applied != 28 || full.Balance != 27 || full.Version() != 28 {
		t.Fatalf("schema change: applied %d, balance %d, version %d; want all 28 replayed", full.applied, full.Balance, full.Version())
	}
	for range 2 {
		aggregate.Raise(full, Deposited{Cents: 1})
	}
	if err := v2.Save(ctx, full); err != nil { // 30 events: snapshot at 30, schema 2
		t.Fatal(err)
	}
	if snap, err := store.LoadSnapshot(ctx, "Account-acc-1"); err != nil || snap.Version != 30 || snap.SchemaVersion != 2 {
		t.Fatalf("snapshot after the schema-2 save = version %d schema %d, %v; want 30, 2", snap.Version, snap.SchemaVersion, err)
	}
	if again, err := v2.Load(ctx, "acc-1"); err != nil || again.applied != 0 || again.Version() != 30 || again.Balance != 29 {
		t.Fatalf("schema 2 from its own snapshot: applied %d, version %d, balance %d, %v; want 0, 30, 29",
			again.applied, again.Version(), again.Balance, err)
	}
	// And the old schema now rebuilds from the events in turn.
	old, err := repo.Load(ctx, "acc-1")
	if err != nil {
		t.Fatal(err)
	}
	if old.applied != 30 || old.Version() != 30 || old.Balance != 29 {
		t.Errorf("schema 1 after a schema-2 snapshot: applied %d, version %d, balance %d; want 30, 30, 29",
			old.applied, old.Version(), old.Balance)
	}
}
