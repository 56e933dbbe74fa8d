package eventstore_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
)

type ItemAdded struct{ SKU string }

func (ItemAdded) EventType() string { return "ItemAdded" }

func envelope(aggID string, sku string) eventsource.Envelope {
	env := eventsource.NewEnvelope(ItemAdded{SKU: sku})
	env.AggregateType, env.AggregateID = "Cart", aggID
	return env
}

// ExampleMemory appends to two streams with optimistic concurrency, then
// reads one stream and the global order.
func ExampleMemory() {
	ctx := context.Background()
	store := eventstore.NewMemory()
	cart1, cart2 := eventsource.StreamID("Cart", "1"), eventsource.StreamID("Cart", "2")

	e1, e2 := envelope("1", "apple"), envelope("1", "pear")
	e1.Version, e2.Version = 1, 2
	if _, err := store.Append(ctx, cart1, 0, []eventsource.Envelope{e1, e2}); err != nil {
		fmt.Println(err)
	}
	e3 := envelope("2", "fig")
	e3.Version = 1
	if _, err := store.Append(ctx, cart2, 0, []eventsource.Envelope{e3}); err != nil {
		fmt.Println(err)
	}
	// A writer that read cart 1 at version 1 is too late.
	stale := envelope("1", "plum")
	stale.Version = 2
	_, err := store.Append(ctx, cart1, 1, []eventsource.Envelope{stale})
	fmt.Println(errors.Is(err, eventsource.ErrConcurrencyConflict))

	for env, err := range store.Load(ctx, cart1, 1) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(cart1, "v", env.Version, env.Event.(ItemAdded).SKU)
	}
	for env, err := range store.ReadAll(ctx, 1) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("position", env.Position, env.AggregateID, env.Event.(ItemAdded).SKU)
	}
	// Output:
	// true
	// Cart-1 v 1 apple
	// Cart-1 v 2 pear
	// position 1 1 apple
	// position 2 1 pear
	// position 3 2 fig
}
