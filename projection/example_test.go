package projection_test

import (
	"context"
	"fmt"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/projection"
)

type TicketSold struct{ Cents int64 }

func (TicketSold) EventType() string { return "TicketSold" }

// revenue is a projection: it declares the types it reads and handles them.
type revenue struct{ cents int64 }

func (r *revenue) EventTypes() []string { return []string{"TicketSold"} }
func (r *revenue) Handle(_ context.Context, env eventsource.Envelope) error {
	r.cents += env.Event.(TicketSold).Cents
	return nil
}

func sell(ctx context.Context, store eventstore.Store, show string, cents ...int64) {
	var envs []eventsource.Envelope
	for i, c := range cents {
		env := eventsource.NewEnvelope(TicketSold{Cents: c})
		env.AggregateType, env.AggregateID, env.Version = "Show", show, int64(i+1)
		envs = append(envs, env)
	}
	if _, err := store.Append(ctx, eventsource.StreamID("Show", show), 0, envs); err != nil {
		panic(err)
	}
}

// ExampleRunner feeds a projection from the store and saves its
// checkpoint: a second CatchUp reads only what was appended since.
func ExampleRunner() {
	ctx := context.Background()
	store := eventstore.NewMemory()
	checkpoints := eventstore.NewMemoryCheckpoints()
	r := &revenue{}
	runner := projection.NewRunner("revenue", r, store, checkpoints)

	sell(ctx, store, "hamlet", 4000, 4000)
	n, err := runner.CatchUp(ctx)
	fmt.Println("applied", n, err, "revenue", r.cents)

	sell(ctx, store, "lear", 3500)
	n, err = runner.CatchUp(ctx)
	fmt.Println("applied", n, err, "revenue", r.cents)

	pos, _ := checkpoints.Checkpoint(ctx, "revenue")
	fmt.Println("checkpoint", pos)
	// Output:
	// applied 2 <nil> revenue 8000
	// applied 1 <nil> revenue 11500
	// checkpoint 3
}
