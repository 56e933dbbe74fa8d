package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

func tag(name string, order *[]string) bus.Middleware {
	return func(next bus.Handler) bus.Handler {
		return bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
			*order = append(*order, name)
			return next.Handle(ctx, env)
		})
	}
}

// Bus-wide middleware runs outside the subscription's own, each list in
// its order.
func TestMiddlewareOrder(t *testing.T) {
	var order []string
	b := bus.NewInProcess(bus.WithHandlerMiddleware(tag("bus1", &order), tag("bus2", &order)))
	defer b.Close(context.Background())
	if _, err := b.Subscribe(bustest.Ping{}.EventType(), bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		order = append(order, "handler")
		return nil
	}), bus.WithMiddleware(tag("sub1", &order), tag("sub2", &order))); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), bustest.NewEnvelope("m", 1, bustest.Ping{})); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(order); got != "[bus1 bus2 sub1 sub2 handler]" {
		t.Errorf("ran %s; want [bus1 bus2 sub1 sub2 handler]", got)
	}
}

// Timeout ends the handler's ctx after d; a handler that honours it fails
// with an error matching context.DeadlineExceeded.
func TestTimeoutMiddleware(t *testing.T) {
	h := bus.Timeout(20 * time.Millisecond)(bus.HandlerFunc(func(ctx context.Context, _ eventsource.Envelope) error {
		<-ctx.Done()
		return ctx.Err()
	}))
	start := time.Now()
	err := h.Handle(context.Background(), bustest.NewEnvelope("t", 1, bustest.Ping{}))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Handle = %v; want DeadlineExceeded", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("returned after %v", waited)
	}
	fast := bus.Timeout(time.Minute)(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return nil }))
	if err := fast.Handle(context.Background(), bustest.NewEnvelope("t", 2, bustest.Ping{})); err != nil {
		t.Errorf("a handler within its time: %v", err)
	}
}

// Permanent marks an error without hiding it.
func TestPermanent(t *testing.T) {
	cause := errors.New("negative total")
	err := fmt.Errorf("validate: %w", bus.Permanent(cause))
	if !errors.Is(err, bus.ErrPermanent) || !errors.Is(err, cause) || err.Error() != "validate: negative total" {
		t.Errorf("err = %v; want it to match ErrPermanent and its cause, with the cause's text", err)
	}
	if bus.Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
}

func ExampleWithMiddleware() {
	b := bus.NewInProcess()
	defer b.Close(context.Background())
	logCalls := func(next bus.Handler) bus.Handler {
		return bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
			fmt.Println("handling", env.Type)
			return next.Handle(ctx, env)
		})
	}
	_, _ = b.Subscribe(bustest.Ping{}.EventType(), bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
		if env.Event.(bustest.Ping).N < 0 {
			return bus.Permanent(errors.New("negative")) // dead-lettered at once on a broker bus
		}
		return nil
	}), bus.WithMiddleware(logCalls, bus.Timeout(5*time.Second)))
	_ = b.Start(context.Background())
	_ = b.Publish(context.Background(), bustest.NewEnvelope("42", 1, bustest.Ping{N: 1}))
	// Output: handling BustestPing
}
