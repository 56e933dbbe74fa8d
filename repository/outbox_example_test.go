package repository_test

import (
	"context"
	"fmt"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/repository"
)

// Outbox mode: Save appends and nudges the relay, the only publisher.
func ExampleRelay() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := eventstore.NewMemory()
	b := bus.NewInProcess()
	handled := make(chan string, 1)
	if _, err := bus.On(b, func(_ context.Context, e Opened, _ eventsource.Envelope) error {
		handled <- e.Owner
		return nil
	}); err != nil {
		panic(err)
	}

	// One relay per name is active across processes: the others stand by.
	relay := repository.NewRelay("outbox", store, eventstore.NewMemoryCheckpoints(), b,
		repository.WithRelayLease(eventstore.NewMemoryLease(), 10*time.Second, ""))
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx, time.Second) }()

	accounts := repository.New(store, nil, newAccount, repository.WithOutbox(relay))
	a := newAccount()
	a.SetID("acc-1")
	aggregate.Raise(a, Opened{Owner: "ada"})
	if err := accounts.Save(ctx, a); err != nil {
		panic(err)
	}
	fmt.Println("handled:", <-handled)

	cancel()
	fmt.Println("stopped:", <-done, relay.Status().Position)
	// Output:
	// handled: ada
	// stopped: <nil> 1
}
