package bus_test

import (
	"context"
	"strings"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

func TestChainForTellsMiddlewareTheSubscription(t *testing.T) {
	var built []bus.SubscriptionInfo
	var order []string
	record := func(tag string) bus.Middleware {
		return func(next bus.Handler) bus.Handler {
			info, ok := bus.SubscriptionOf(next)
			if !ok {
				t.Errorf("middleware %s: SubscriptionOf found no subscription", tag)
			}
			built = append(built, info)
			return bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
				order = append(order, tag)
				return next.Handle(ctx, env)
			})
		}
	}
	ran := false
	h := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { ran = true; return nil })
	info := bus.SubscriptionInfo{Name: "audit", EventTypes: []string{"A", "B"}}
	chained := bus.ChainFor(info, h, []bus.Middleware{record("bus")}, []bus.Middleware{record("sub1"), record("sub2")})
	if err := chained.Handle(context.Background(), eventsource.Envelope{}); err != nil {
		t.Fatal(err)
	}
	if !ran || len(built) != 3 {
		t.Fatalf("ran %v, middleware built %d times, want 3", ran, len(built))
	}
	for _, b := range built {
		if b.Name != "audit" || len(b.EventTypes) != 2 {
			t.Errorf("middleware saw %+v", b)
		}
	}
	if got := strings.Join(order, ","); got != "bus,sub1,sub2" {
		t.Errorf("middleware ran in order %s, want bus-wide first, then the subscription's", got)
	}
	if _, ok := bus.SubscriptionOf(h); ok {
		t.Error("SubscriptionOf recognised a plain handler")
	}
}

func TestChainForWithoutMiddlewareIsTheHandler(t *testing.T) {
	h := &countingHandler{}
	if got := bus.ChainFor(bus.SubscriptionInfo{Name: "x"}, h, nil, nil); got != bus.Handler(h) {
		t.Fatalf("ChainFor without middleware returned %T, want the handler itself", got)
	}
}

type countingHandler struct{ n int }

func (c *countingHandler) Handle(context.Context, eventsource.Envelope) error { c.n++; return nil }

type decorator struct{ bus.Bus }

func (d decorator) Unwrap() bus.Bus { return d.Bus }

func TestUnwrapFollowsDecorators(t *testing.T) {
	b := bus.NewInProcess()
	defer b.Close(context.Background())
	if got := bus.Unwrap(decorator{decorator{b}}); got != bus.Bus(b) {
		t.Fatalf("Unwrap = %T, want the in-process bus", got)
	}
	if got := bus.Unwrap(b); got != bus.Bus(b) {
		t.Fatalf("Unwrap of an undecorated bus = %T", got)
	}
}

// TestChainForAllocatesNothingPerEvent: a bus-wide middleware that learns
// its subscription costs no allocation per event.
func TestChainForAllocatesNothingPerEvent(t *testing.T) {
	var names []string
	mw := func(next bus.Handler) bus.Handler {
		info, _ := bus.SubscriptionOf(next)
		names = append(names, info.Name)
		return next
	}
	b := bus.NewInProcess(bus.WithHandlerMiddleware(mw))
	defer b.Close(context.Background())
	h := &countingHandler{}
	if _, err := b.Subscribe("BustestPing", h, bus.WithName("count")); err != nil {
		t.Fatal(err)
	}
	env := ping("a", 1)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		if err := b.Publish(ctx, env); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 || h.n == 0 || len(names) != 1 || names[0] != "count" {
		t.Errorf("%v allocations per Publish, %d calls, middleware built for %v; want 0 and [count]", allocs, h.n, names)
	}
}
