package kafka_test

import (
	"context"
	"fmt"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/kafka"
)

type StockReserved struct{ SKU string }

func (StockReserved) EventType() string { return "StockReserved" }

// Example publishes to a topic keyed by aggregate ID and consumes in a
// group. It needs a Kafka broker (integration/cmd/kfake will do), so it is
// compiled but not run by go test.
func Example() {
	ctx := context.Background()
	registry := eventsource.NewRegistry()
	eventsource.MustRegister[StockReserved](registry)
	b, err := kafka.New(ctx, kafka.Config{
		Brokers:      []string{"127.0.0.1:9092"},
		Registry:     registry,
		Topic:        "warehouse", // retries in warehouse.retry.picking, dead letters in warehouse.dlq.picking
		Group:        "picking",
		CreateTopics: true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close(ctx)
	_, _ = bus.On(b, func(ctx context.Context, e StockReserved, env eventsource.Envelope) error {
		fmt.Println("pick", e.SKU, "for", env.AggregateID)
		return nil
	})
	if err := b.Start(ctx); err != nil { // joins the group
		fmt.Println(err)
		return
	}
	env := eventsource.NewEnvelope(StockReserved{SKU: "sku-7"})
	env.AggregateType, env.AggregateID, env.Version = "Order", "o-1", 1
	fmt.Println(b.Publish(ctx, env))
	fmt.Println(b.Topics())
}
