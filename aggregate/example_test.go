package aggregate_test

import (
	"context"
	"fmt"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/eventstore"
)

type Credited struct{ Cents int64 }

func (Credited) EventType() string { return "Credited" }

// Wallet embeds Base and applies its events; commands call Raise.
type Wallet struct {
	aggregate.Base
	balance int64
}

func (a *Wallet) AggregateType() string { return "Wallet" }
func (a *Wallet) Apply(e eventsource.Event) {
	if d, ok := e.(Credited); ok {
		a.balance += d.Cents
	}
}

func (a *Wallet) Credit(cents int64) error {
	if cents <= 0 {
		return fmt.Errorf("deposit %d: must be positive", cents)
	}
	aggregate.Raise(a, Credited{Cents: cents})
	return nil
}

// ExampleRaise applies an event and records it as pending, to be stored.
func ExampleRaise() {
	wallet := &Wallet{}
	wallet.SetID("wallet-1")
	_ = wallet.Credit(500)
	_ = wallet.Credit(250)
	fmt.Println(wallet.balance, wallet.Version(), len(wallet.Pending()))
	fmt.Println(wallet.Credit(-1))
	// Output:
	// 750 2 2
	// deposit -1: must be positive
}

// ExampleReplay rebuilds an aggregate from its stored history.
func ExampleReplay() {
	ctx := context.Background()
	store := eventstore.NewMemory()
	wallet := &Wallet{}
	wallet.SetID("wallet-1")
	_ = wallet.Credit(500)
	_ = wallet.Credit(250)
	stream := eventsource.StreamID(wallet.AggregateType(), wallet.ID())
	if _, err := store.Append(ctx, stream, 0, wallet.Pending()); err != nil {
		fmt.Println(err)
		return
	}

	loaded := &Wallet{}
	loaded.SetID("wallet-1")
	err := aggregate.Replay(loaded, store.Load(ctx, stream, 1))
	fmt.Println(loaded.balance, loaded.Version(), err)
	// Output: 750 2 <nil>
}
