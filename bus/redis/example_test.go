package redis_test

import (
	"context"
	"fmt"
	"log"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/redis"
)

type OrderPlaced struct{ Customer string }

func (OrderPlaced) EventType() string { return "OrderPlaced" }

func onOrderPlaced(ctx context.Context, e OrderPlaced, env eventsource.Envelope) error {
	fmt.Println("bill", e.Customer)
	return nil
}

var audit = bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
	log.Println(env.Type, env.AggregateID)
	return nil
})

// Example declares the subscriptions, then starts consuming, and replays
// the group's dead letters. It needs a Redis server, so it is compiled but
// not run by go test; the README's broker snippet is its marked region.
func Example() {
	ctx := context.Background()
	registry := eventsource.NewRegistry()
	eventsource.MustRegister[OrderPlaced](registry)
	// readme-redis {
	b, err := redis.New(ctx, redis.Config{
		URL:      "redis://127.0.0.1:6379/0",
		Registry: registry,  // decodes what the bus consumes
		Group:    "billing", // instances in one group share the events
	})
	if err != nil {
		return
	}
	bus.On(b, onOrderPlaced) // named "OrderPlaced": its identity in retries and dead letters
	b.SubscribeAll(audit, bus.WithName("audit"))
	err = b.Start(ctx) // now consume
	n, err := b.DeadLetters().ReplayAll(ctx)
	// readme-redis }
	fmt.Println(n, err)
	_ = b.Close(ctx)
}
