package aggregate_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
)

type Opened struct{ Owner string }
type Deposited struct{ Cents int64 }

func (Opened) EventType() string    { return "Opened" }
func (Deposited) EventType() string { return "Deposited" }

var errNotOpen = errors.New("account not open")

type Account struct {
	aggregate.Base
	open    bool
	balance int64
}

func (a *Account) AggregateType() string { return "Account" }
func (a *Account) Apply(e eventsource.Event) {
	switch e := e.(type) {
	case Opened:
		a.open = true
	case Deposited:
		a.balance += e.Cents
	}
}
func (a *Account) Deposit(c int64) error {
	if !a.open {
		return errNotOpen
	}
	aggregate.Raise(a, Deposited{Cents: c})
	return nil
}

func TestRaiseAppliesAndRecords(t *testing.T) {
	a := &Account{}
	a.SetID("acc-1")
	if err := a.Deposit(5); !errors.Is(err, errNotOpen) {
		t.Fatalf("deposit on closed account = %v", err)
	}
	aggregate.Raise(a, Opened{Owner: "ada"})
	if err := a.Deposit(5); err != nil {
		t.Fatal(err)
	}
	if a.balance != 5 || a.Version() != 2 || a.CommittedVersion() != 0 {
		t.Fatalf("balance %d, version %d, committed %d", a.balance, a.Version(), a.CommittedVersion())
	}
	p := a.Pending()
	if len(p) != 2 || p[0].Version != 1 || p[1].Version != 2 || p[1].AggregateID != "acc-1" ||
		p[1].AggregateType != "Account" || p[1].Type != "Deposited" || p[0].ID == p[1].ID {
		t.Fatalf("pending = %+v", p)
	}
	aggregate.MarkCommitted(a)
	if len(a.Pending()) != 0 || a.CommittedVersion() != 2 {
		t.Fatalf("after MarkCommitted: %d pending, committed %d", len(a.Pending()), a.CommittedVersion())
	}
}

func history(envs ...eventsource.Envelope) func(func(eventsource.Envelope, error) bool) {
	return func(yield func(eventsource.Envelope, error) bool) {
		for _, e := range envs {
			if !yield(e, nil) {
				return
			}
		}
	}
}

func TestReplay(t *testing.T) {
	src := &Account{}
	src.SetID("acc-1")
	aggregate.Raise(src, Opened{})
	aggregate.Raise(src, Deposited{Cents: 3})
	aggregate.Raise(src, Deposited{Cents: 4})

	a := &Account{}
	if err := aggregate.Replay(a, history(src.Pending()...)); err != nil {
		t.Fatal(err)
	}
	if a.ID() != "acc-1" || a.balance != 7 || a.Version() != 3 || a.CommittedVersion() != 3 || len(a.Pending()) != 0 {
		t.Fatalf("replayed: id %q balance %d version %d committed %d", a.ID(), a.balance, a.Version(), a.CommittedVersion())
	}

	gap := slices.Clone(src.Pending())
	gap = slices.Delete(gap, 1, 2)
	if err := aggregate.Replay(&Account{}, history(gap...)); !errors.Is(err, aggregate.ErrHistory) {
		t.Errorf("Replay of a history with a version gap = %v, want ErrHistory", err)
	}
	// Another aggregate's event where this one's next belongs: a store
	// or a caller mixing streams must not go unnoticed.
	mixed := slices.Clone(src.Pending())
	mixed[2].AggregateID = "acc-2"
	if err := aggregate.Replay(&Account{}, history(mixed...)); !errors.Is(err, aggregate.ErrHistory) {
		t.Errorf("Replay of a history with another aggregate's event = %v, want ErrHistory", err)
	}
	failing := func(yield func(eventsource.Envelope, error) bool) {
		yield(eventsource.Envelope{}, eventsource.ErrMalformed)
	}
	if err := aggregate.Replay(&Account{}, failing); !errors.Is(err, eventsource.ErrMalformed) {
		t.Errorf("Replay of a failing history = %v", err)
	}
}
