package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/rabbitmq"
)

type ParcelShipped struct{ Carrier string }

func (ParcelShipped) EventType() string { return "ParcelShipped" }

// Example publishes to the exchange and consumes in a group. It needs a
// RabbitMQ server, so it is compiled but not run by go test.
func Example() {
	ctx := context.Background()
	registry := eventsource.NewRegistry()
	eventsource.MustRegister[ParcelShipped](registry)
	b, err := rabbitmq.New(ctx, rabbitmq.Config{
		URL:      "amqp://guest:guest@127.0.0.1:5672/",
		Registry: registry,
		Exchange: "shop",     // every event, routing key "{aggregate_type}.{event_type}"
		Group:    "tracking", // its queue "shop.tracking"
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close(ctx)
	_, _ = bus.On(b, func(ctx context.Context, e ParcelShipped, env eventsource.Envelope) error {
		fmt.Println(env.AggregateID, "shipped with", e.Carrier)
		return nil
	})
	if err := b.Start(ctx); err != nil { // declares and binds the group's queue, then consumes
		fmt.Println(err)
		return
	}
	env := eventsource.NewEnvelope(ParcelShipped{Carrier: "DHL"})
	env.AggregateType, env.AggregateID, env.Version = "Parcel", "p-1", 1
	if err := b.Publish(ctx, env); errors.Is(err, rabbitmq.ErrUnroutable) {
		fmt.Println("no group's queue is bound for ParcelShipped")
	}
}
