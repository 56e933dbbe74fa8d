package saga_test

import (
	"context"
	"fmt"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/saga"
)

type (
	OrderPlaced     struct{ OrderID string }
	PaymentReceived struct{ OrderID string }
	RequestPayment  struct{ OrderID string }
	CancelOrder     struct{ OrderID, Reason string }
)

func (OrderPlaced) EventType() string      { return "OrderPlaced" }
func (PaymentReceived) EventType() string  { return "PaymentReceived" }
func (RequestPayment) CommandType() string { return "RequestPayment" }
func (CancelOrder) CommandType() string    { return "CancelOrder" }

// A payment saga: request a payment when an order is placed, cancel the
// order if no payment arrives within 15 minutes.
func Example() {
	type payment struct{ Paid bool }
	s := saga.New[payment]("payment")
	saga.On(s, func(e OrderPlaced) string { return e.OrderID },
		func(_ context.Context, sc *saga.Scope[payment], e OrderPlaced) error {
			sc.Dispatch(RequestPayment{OrderID: e.OrderID})
			sc.Schedule("payment-timeout", 15*time.Minute)
			return nil
		}, saga.Starts())
	saga.On(s, func(e PaymentReceived) string { return e.OrderID },
		func(_ context.Context, sc *saga.Scope[payment], _ PaymentReceived) error {
			sc.State.Paid = true
			return nil
		}, saga.Ends())
	saga.OnDeadline(s, "payment-timeout", func(_ context.Context, sc *saga.Scope[payment], _ saga.Deadline) error {
		sc.Dispatch(CancelOrder{OrderID: sc.ID(), Reason: "not paid in time"})
		sc.End()
		return nil
	})

	// Commands go to handlers (usually: load an aggregate, call a method,
	// save): their ctx carries the triggering event's correlation and
	// causation, which the repository stamps on what it saves.
	cmds := saga.NewCommands()
	saga.Handle(cmds, func(ctx context.Context, c RequestPayment) error {
		md, _ := eventsource.MetadataFrom(ctx)
		fmt.Println("request payment for", c.OrderID, "correlation", md.CorrelationID)
		return nil
	})
	saga.Handle(cmds, func(_ context.Context, c CancelOrder) error {
		fmt.Println("cancel", c.OrderID+":", c.Reason)
		return nil
	})

	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	runner := saga.NewRunner(s, saga.NewMemoryStore(), cmds, saga.WithClock(clock))

	ctx := context.Background()
	b := bus.NewInProcess()
	defer b.Close(ctx)
	if _, err := saga.Subscribe(b, runner); err != nil {
		fmt.Println(err)
		return
	}
	for _, id := range []string{"o1", "o2"} {
		placed := eventsource.NewEnvelope(OrderPlaced{OrderID: id})
		placed.AggregateType, placed.AggregateID, placed.Version = "Order", id, 1
		placed.Metadata.CorrelationID = "checkout-" + id
		_ = b.Publish(ctx, placed, placed) // delivered twice: one request
	}
	paid := eventsource.NewEnvelope(PaymentReceived{OrderID: "o1"})
	paid.AggregateType, paid.AggregateID, paid.Version = "Payment", "o1", 1
	_ = b.Publish(ctx, paid)

	now = now.Add(16 * time.Minute) // RunDeadlines would do this in a loop
	n, err := runner.FireDue(ctx)
	fmt.Println("deadlines fired:", n, err)
	// Output:
	// request payment for o1 correlation checkout-o1
	// request payment for o2 correlation checkout-o2
	// cancel o2: not paid in time
	// deadlines fired: 1 <nil>
}

// Ended instances are kept so that late redeliveries of their events stay
// no-ops; purge them once they are older than any redelivery or replay
// window of the bus, here 30 days.
func ExampleMemoryStore_PurgeEnded() {
	ctx := context.Background()
	var store saga.Store = saga.NewMemoryStore()
	endedAt := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, inst := range []*saga.Instance{
		{Saga: "payment", ID: "o1", Ended: true, EndedAt: endedAt},
		{Saga: "payment", ID: "o2"}, // still running
	} {
		if err := store.Save(ctx, inst); err != nil {
			fmt.Println(err)
			return
		}
	}

	const retention = 30 * 24 * time.Hour
	now := endedAt.Add(31 * 24 * time.Hour)
	if p, ok := store.(saga.Purger); ok {
		n, err := p.PurgeEnded(ctx, "payment", now.Add(-retention))
		fmt.Println("purged:", n, err)
	}
	for _, id := range []string{"o1", "o2"} {
		inst, _ := store.Load(ctx, "payment", id)
		fmt.Println(id, "stored:", inst.Version > 0)
	}
	// Output:
	// purged: 1 <nil>
	// o1 stored: false
	// o2 stored: true
}
