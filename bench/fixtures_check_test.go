package bench

// Plain tests, run by `go test ./bench/...` (which runs no benchmark): they
// check that every fixture delivers what the benchmarks count on, and that
// the synchronous dispatch path stays at zero allocations.

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
)

const checkEvents = 500

func TestOursFanoutDeliversInOrder(t *testing.T) {
	for _, tc := range []struct {
		name       string
		aggregates int
		background bool
		opts       []bus.SubscribeOption
	}{
		{"sync", 1, false, nil},
		{"async-block", 1, false, []bus.SubscribeOption{bus.Async(4, bus.Block)}},
		{"publish-async", 64, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newOursFanout(t, 3, tc.aggregates, nil, tc.opts...)
			f.sinks.expect(checkEvents)
			f.publish(t, checkEvents, tc.background)
			f.sinks.wait(t, time.Minute)
			f.close(t)
			if ooo := f.sinks.outOfOrder(); ooo != 0 {
				t.Fatalf("%d deliveries out of order", ooo)
			}
			for i, s := range f.sinks.all {
				if got := s.got.Load(); got != checkEvents {
					t.Errorf("subscriber %d got %d events, want %d", i, got, checkEvents)
				}
			}
		})
	}
}

func TestSeqSinkCountsOutOfOrder(t *testing.T) {
	s := newSinks(1, 2)
	s.expect(4)
	// Aggregate 0 has positions 1 and 3, aggregate 1 has 2 and 4.
	s.all[0].observe(3, 2) // aggregate 0, version 2 before 1
	s.all[0].observe(1, 1)
	s.all[0].observe(2, 1)
	s.all[0].observe(4, 2)
	s.wait(t, time.Second)
	if got := s.outOfOrder(); got != 2 {
		t.Fatalf("out of order = %d, want 2", got)
	}
}

func TestWatermillFixturesDeliver(t *testing.T) {
	t.Run("gochannel", func(t *testing.T) {
		w := newWatermillFanout(t, gochannel.Config{}, 3)
		w.sinks.expect(checkEvents)
		w.publish(t, checkEvents)
		w.sinks.wait(t, time.Minute)
		w.close()
	})
	t.Run("gochannel-ack", func(t *testing.T) {
		w := newWatermillFanout(t, gochannel.Config{BlockPublishUntilSubscriberAck: true}, 3)
		w.sinks.expect(checkEvents)
		w.publish(t, checkEvents)
		w.sinks.wait(t, time.Minute)
		w.close()
		if ooo := w.sinks.outOfOrder(); ooo != 0 {
			t.Fatalf("%d deliveries out of order with publish-until-ack", ooo)
		}
	})
	t.Run("cqrs", func(t *testing.T) {
		w := newWatermillCQRS(t, 3)
		defer w.close()
		for range 10 {
			if err := w.bus.Publish(context.Background(), &OrderPlaced{OrderID: "order-1", Amount: 1}); err != nil {
				t.Fatal(err)
			}
		}
		// Publish blocks until every handler acked: nothing is left to wait for.
		if got := w.handled.Load(); got != 30 {
			t.Fatalf("handled %d, want 30", got)
		}
	})
}

// TestSyncPublishAllocs guards the target of 0 allocations per event on
// the synchronous typed path, with the envelope built up front.
func TestSyncPublishAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	for _, n := range fanouts {
		bs := bus.NewInProcess(bus.WithLogger(quietLogger()))
		for range n {
			if _, err := bus.On(bs, func(context.Context, OrderPlaced, eventsource.Envelope) error { return nil }); err != nil {
				t.Fatal(err)
			}
		}
		env := orderEnvelope("order-1")
		allocs := testing.AllocsPerRun(1000, func() {
			if err := bs.Publish(benchCtx, env); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Publish to %d handlers: %v allocs per event, want 0", n, allocs)
		}
	}
}

func TestStoreFixtureLoads(t *testing.T) {
	ctx := context.Background()
	store := eventstore.NewMemory()
	batch := []eventsource.Envelope{orderEnvelope("order-1"), orderEnvelope("order-1")}
	if _, err := store.Append(ctx, "Order-order-1", eventstore.NoStream, batch); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Append(ctx, "Order-order-1", 2, batch); err != nil {
		t.Fatal(err)
	}
	var versions []int64
	for env, err := range store.Load(ctx, "Order-order-1", 1) {
		if err != nil {
			t.Fatal(err)
		}
		versions = append(versions, env.Version)
	}
	if len(versions) != 4 || versions[3] != 4 {
		t.Fatalf("versions %v, want 1..4", versions)
	}
}
