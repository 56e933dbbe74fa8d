package repository_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/repository"
)

type Opened struct{ Owner string }
type Deposited struct{ Cents int64 }

func (Opened) EventType() string    { return "Opened" }
func (Deposited) EventType() string { return "Deposited" }

type Account struct {
	aggregate.Base
	Owner   string
	Balance int64
	applied int // events applied since construction: shows what was replayed
	schema  int
}

func newAccount() *Account               { return &Account{schema: 1} }
func (a *Account) AggregateType() string { return "Account" }
func (a *Account) Apply(e eventsource.Event) {
	a.applied++
	switch e := e.(type) {
	case Opened:
		a.Owner = e.Owner
	case Deposited:
		a.Balance += e.Cents
	}
}
func (a *Account) SnapshotSchema() int              { return a.schema }
func (a *Account) MarshalSnapshot() ([]byte, error) { return json.Marshal(a) }
func (a *Account) UnmarshalSnapshot(b []byte) error { return json.Unmarshal(b, a) }

func quiet() repository.Option { return repository.WithLogger(slog.New(slog.DiscardHandler)) }

func open(t *testing.T, repo *repository.Repository[*Account], id string, deposits ...int64) *Account {
	t.Helper()
	a := newAccount()
	a.SetID(id)
	aggregate.Raise(a, Opened{Owner: "ada"})
	for _, d := range deposits {
		aggregate.Raise(a, Deposited{Cents: d})
	}
	if err := repo.Save(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestSaveAppendsThenPublishes(t *testing.T) {
	ctx := context.Background()
	store := eventstore.NewMemory()
	b := bus.NewInProcess()
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	repo := repository.New(store, b, newAccount, quiet())
	md := eventsource.Metadata{CorrelationID: "req-1"}
	a := newAccount()
	a.SetID("acc-1")
	aggregate.Raise(a, Opened{Owner: "ada"})
	aggregate.Raise(a, Deposited{Cents: 10})
	if err := repo.Save(eventsource.WithMetadata(ctx, md), a); err != nil {
		t.Fatal(err)
	}
	got := rec.Got()
	if len(got) != 2 || got[0].Position != 1 || got[1].Position != 2 || got[1].Version != 2 || got[0].Metadata.CorrelationID != "req-1" {
		t.Fatalf("published %+v", got)
	}
	if a.CommittedVersion() != 2 || len(a.Pending()) != 0 {
		t.Errorf("aggregate not marked committed: %d, %d pending", a.CommittedVersion(), len(a.Pending()))
	}

	loaded, err := repo.Load(ctx, "acc-1")
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Owner != "ada" || loaded.Balance != 10 || loaded.Version() != 2 || loaded.ID() != "acc-1" {
		t.Errorf("loaded %+v", loaded)
	}
}

func TestConflictPublishesNothing(t *testing.T) {
	ctx := context.Background()
	b := bus.NewInProcess()
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	repo := repository.New(eventstore.NewMemory(), b, newAccount, quiet())
	open(t, repo, "acc-1")
	x, _ := repo.Load(ctx, "acc-1")
	y, _ := repo.Load(ctx, "acc-1")
	aggregate.Raise(x, Deposited{Cents: 1})
	aggregate.Raise(y, Deposited{Cents: 2})
	if err := repo.Save(ctx, x); err != nil {
		t.Fatal(err)
	}
	err := repo.Save(ctx, y)
	var ce *eventsource.ConflictError
	if !errors.Is(err, eventsource.ErrConcurrencyConflict) || !errors.As(err, &ce) || ce.Expected != 1 || ce.Actual != 2 {
		t.Fatalf("stale save = %v, want a conflict expecting 1, actual 2", err)
	}
	if rec.Len() != 2 {
		t.Errorf("%d events published, want 2 (the stale save published nothing)", rec.Len())
	}
}

func TestLoadUnknownIsNotFound(t *testing.T) {
	repo := repository.New(eventstore.NewMemory(), nil, newAccount, quiet())
	if _, err := repo.Load(context.Background(), "nope"); !errors.Is(err, eventsource.ErrNotFound) {
		t.Errorf("Load of an unknown ID = %v, want ErrNotFound", err)
	}
	if err := repo.Save(context.Background(), newAccount()); err != nil {
		t.Errorf("saving an aggregate with nothing pending = %v", err)
	}
	a := newAccount()
	aggregate.Raise(a, Opened{})
	if err := repo.Save(context.Background(), a); !errors.Is(err, aggregate.ErrNoID) {
		t.Errorf("saving without an ID = %v, want ErrNoID", err)
	}
}

func TestPublishFailureKeepsEvents(t *testing.T) {
	ctx := context.Background()
	store := eventstore.NewMemory()
	b := bus.NewInProcess()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	repo := repository.New(store, b, newAccount, quiet())
	a := newAccount()
	a.SetID("acc-1")
	aggregate.Raise(a, Opened{})
	err := repo.Save(ctx, a)
	var pe *repository.PublishError
	if !errors.Is(err, repository.ErrPublish) || !errors.Is(err, bus.ErrClosed) || !errors.As(err, &pe) || pe.Events != 1 {
		t.Fatalf("Save on a closed bus = %v, want a PublishError wrapping ErrClosed", err)
	}
	if _, err := repo.Load(ctx, "acc-1"); err != nil {
		t.Errorf("events not stored: %v", err)
	}
}

func TestSnapshots(t *testing.T) {
	ctx := context.Background()
	store := eventstore.NewMemory()
	snaps := eventstore.NewMemorySnapshots()
	repo := repository.New(store, nil, newAccount, repository.WithSnapshots(snaps, 10), quiet())
	a := open(t, repo, "acc-1", make([]int64, 24)...) // 25 events: snapshot at 25
	for range 3 {
		aggregate.Raise(a, Deposited{Cents: 1})
	}
	if err := repo.Save(ctx, a); err != nil { // 28 events: no new snapshot
		t.Fatal(err)
	}
	snap, err := snaps.LoadSnapshot(ctx, "Account-acc-1")
	if err != nil || snap.Version != 25 || snap.SchemaVersion != 1 {
		t.Fatalf("snapshot = %+v, %v; want version 25", snap, err)
	}
	loaded, err := repo.Load(ctx, "acc-1")
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Version() != 28 || loaded.Balance != 3 || loaded.applied != 3 {
		t.Errorf("loaded version %d balance %d after applying %d events; want 28, 3, 3 (replayed after the snapshot)",
			loaded.Version(), loaded.Balance, loaded.applied)
	}

	// A new snapshot schema ignores the old snapshot and replays everything.
	v2 := repository.New(store, nil, func() *Account { return &Account{schema: 2} }, repository.WithSnapshots(snaps, 10), quiet())
	full, err := v2.Load(ctx, "acc-1")
	if err != nil {
		t.Fatal(err)
	}
	if full.applied != 28 || full.Balance != 3 || full.Version() != 28 {
		t.Errorf("schema change: applied %d, balance %d, version %d; want all 28 replayed", full.applied, full.Balance, full.Version())
	}

	// A snapshot that does not decode is ignored too.
	if err := snaps.SaveSnapshot(ctx, eventstore.Snapshot{StreamID: "Account-acc-1", Version: 99, SchemaVersion: 1, Data: []byte("{garbage")}); err != nil {
		t.Fatal(err)
	}
	again, err := repo.Load(ctx, "acc-1")
	if err != nil {
		t.Fatal(err)
	}
	if again.applied != 28 || again.Version() != 28 {
		t.Errorf("corrupt snapshot: applied %d, version %d; want a full replay", again.applied, again.Version())
	}
}

func TestRelayPublishesStoredEventsAtLeastOnce(t *testing.T) {
	ctx := context.Background()
	store := eventstore.NewMemory()
	checkpoints := eventstore.NewMemoryCheckpoints()
	repo := repository.New(store, nil, newAccount, quiet()) // publishing left to the relay
	open(t, repo, "acc-1", 1, 2)
	open(t, repo, "acc-2")

	b := bus.NewInProcess()
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(bus.HandlerFunc(rec.Handle)); err != nil {
		t.Fatal(err)
	}
	relay := repository.NewRelay("relay", store, checkpoints, b)
	if n, err := relay.PublishPending(ctx); err != nil || n != 4 {
		t.Fatalf("first pass published %d, %v; want 4", n, err)
	}
	if n, err := relay.PublishPending(ctx); err != nil || n != 0 {
		t.Fatalf("second pass published %d, %v; want 0", n, err)
	}
	open(t, repo, "acc-3")
	// The bus goes away: the relay fails and publishes the event next time.
	closed := bus.NewInProcess()
	_ = closed.Close(ctx)
	if _, err := repository.NewRelay("relay", store, checkpoints, closed).PublishPending(ctx); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("relay on a closed bus = %v", err)
	}
	if n, err := relay.PublishPending(ctx); err != nil || n != 1 {
		t.Fatalf("after recovery published %d, %v; want 1", n, err)
	}
	got := rec.Got()
	if len(got) != 5 {
		t.Fatalf("%d events published in total, want 5", len(got))
	}
	for i, e := range got {
		if e.Position != int64(i+1) {
			t.Errorf("event %d has position %d: relay is out of order", i, e.Position)
		}
	}
}

// Events raised before SetID carry an empty AggregateID; stored, they would
// belong to no aggregate and buses would partition them on "". Save refuses
// them before anything is appended or published.
func TestSaveRefusesEventsWithoutAggregateID(t *testing.T) {
	ctx := context.Background()
	store := eventstore.NewMemory()
	b := bus.NewInProcess()
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	repo := repository.New(store, b, newAccount, quiet())

	a := newAccount()
	aggregate.Raise(a, Opened{Owner: "ada"}) // before SetID: the envelope has no aggregate ID
	a.SetID("acc-1")
	aggregate.Raise(a, Deposited{Cents: 5})
	err := repo.Save(ctx, a)
	if !errors.Is(err, eventsource.ErrNoAggregateID) {
		t.Errorf("Save of events raised before SetID = %v, want ErrNoAggregateID", err)
	}
	for env, err := range store.ReadAll(ctx, 1) {
		t.Errorf("stored %+v, %v; want nothing stored", env, err)
	}
	if rec.Len() != 0 {
		t.Errorf("published %+v; want nothing published", rec.Got())
	}
	if len(a.Pending()) != 2 || a.CommittedVersion() != 0 {
		t.Errorf("refused save changed the aggregate: %d pending, committed %d", len(a.Pending()), a.CommittedVersion())
	}

	// No ID at all: the same sentinel, and still aggregate.ErrNoID for
	// callers that match the older error.
	none := newAccount()
	aggregate.Raise(none, Opened{})
	if err := repo.Save(ctx, none); !errors.Is(err, eventsource.ErrNoAggregateID) || !errors.Is(err, aggregate.ErrNoID) {
		t.Errorf("Save without an ID = %v, want ErrNoAggregateID and aggregate.ErrNoID", err)
	}
	// An ID changed after raising would file events under one aggregate's
	// stream while they name another.
	moved := newAccount()
	moved.SetID("acc-1")
	aggregate.Raise(moved, Opened{})
	moved.SetID("acc-2")
	if err := repo.Save(ctx, moved); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("Save of events naming another aggregate = %v, want ErrInvalidEvent", err)
	}
	for env, err := range store.ReadAll(ctx, 1) {
		t.Errorf("stored %+v, %v; want nothing stored", env, err)
	}

	// Load of the empty ID is a caller bug, not a missing aggregate.
	if _, err := repo.Load(ctx, ""); !errors.Is(err, eventsource.ErrNoAggregateID) {
		t.Errorf(`Load("") = %v, want ErrNoAggregateID`, err)
	}
}
