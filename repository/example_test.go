package repository_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/repository"
)

type SeatBooked struct{ Seat string }

func (SeatBooked) EventType() string { return "SeatBooked" }

type Flight struct {
	aggregate.Base
	booked map[string]bool
}

func newFlight() *Flight                { return &Flight{booked: map[string]bool{}} }
func (f *Flight) AggregateType() string { return "Flight" }
func (f *Flight) Apply(e eventsource.Event) {
	if b, ok := e.(SeatBooked); ok {
		f.booked[b.Seat] = true
	}
}

func (f *Flight) Book(seat string) error {
	if f.booked[seat] {
		return fmt.Errorf("seat %s is taken", seat)
	}
	aggregate.Raise(f, SeatBooked{Seat: seat})
	return nil
}

// ExampleRepository loads and saves an aggregate; of two writers that
// loaded the same version, the second gets a concurrency conflict and
// stores nothing.
func ExampleRepository() {
	ctx := context.Background()
	b := bus.NewInProcess()
	defer b.Close(ctx)
	_, _ = bus.On(b, func(_ context.Context, e SeatBooked, env eventsource.Envelope) error {
		fmt.Println("published:", e.Seat, "on", env.AggregateID)
		return nil
	})
	repo := repository.New(eventstore.NewMemory(), b, newFlight)

	f := newFlight()
	f.SetID("LH400")
	_ = f.Book("1A")
	if err := repo.Save(ctx, f); err != nil {
		fmt.Println(err)
		return
	}

	first, _ := repo.Load(ctx, "LH400")
	second, _ := repo.Load(ctx, "LH400")
	_ = first.Book("2B")
	fmt.Println("first save:", repo.Save(ctx, first))
	_ = second.Book("2C")
	err := repo.Save(ctx, second)
	fmt.Println("second save conflicts:", errors.Is(err, eventsource.ErrConcurrencyConflict))

	again, _ := repo.Load(ctx, "LH400")
	fmt.Println(again.Version(), again.Book("1A"))
	// Output:
	// published: 1A on LH400
	// published: 2B on LH400
	// first save: <nil>
	// second save conflicts: true
	// 2 seat 1A is taken
}
