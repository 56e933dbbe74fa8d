package otel_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/otel"
)

// TestMetricCounts publishes a known mix (5 good events, 2 that fail
// once, 1 that always fails, 1 whose handler fails permanently) and
// checks the exact counts every instrument reports, on every bus.
func TestMetricCounts(t *testing.T) {
	for _, bc := range busCases() {
		t.Run(bc.system, func(t *testing.T) {
			tel, _, _, reader := recording(t, false, true)
			b := bc.open(t, tel)
			subscribeMix(t, b)
			ctx := context.Background()
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
			var events []eventsource.Envelope
			for i := range 5 {
				events = append(events, envelope(Good{N: i}, "good"))
			}
			events = append(events, envelope(Flaky{N: 1}, "flaky-1"), envelope(Flaky{N: 2}, "flaky-2"),
				envelope(Failing{}, "failing"), envelope(Poisonous{}, "poison"))
			if err := b.Publish(ctx, events...); err != nil {
				t.Fatal(err)
			}

			// 7 acknowledged (the good ones and the flaky ones' retries), 2
			// dead-lettered; the in-process bus has no retries and no
			// dead letters, and is done when Publish returns.
			want := map[string]int64{
				"eventsource.bus.handler.invocations": 9,
				"eventsource.bus.handler.errors":      4,
				"eventsource.bus.handler.panics":      0,
				"eventsource.bus.retries":             0,
				"eventsource.bus.dead_lettered":       0,
				"eventsource.bus.dropped":             0,
				"messaging.client.sent.messages":      9,
			}
			outcomes := map[string]uint64{otel.OutcomeOK: 5, otel.OutcomeError: 3, otel.OutcomePermanent: 1}
			if bc.broker {
				waitUntil(t, "every event settled", func() bool {
					st := b.Stats()
					return st.Handled+st.DeadLettered == 9 && st.InFlight == 0
				})
				want["eventsource.bus.handler.invocations"] = 5 + 2*2 + 3 + 1
				want["eventsource.bus.handler.errors"] = 2 + 3 + 1
				want["eventsource.bus.retries"] = 2 + 2
				want["eventsource.bus.dead_lettered"] = 2
				want["eventsource.bus.handled"] = 7
				outcomes = map[string]uint64{otel.OutcomeOK: 7, otel.OutcomeError: 5, otel.OutcomePermanent: 1}
			}
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(ctx, &rm); err != nil {
				t.Fatal(err)
			}
			for name, n := range want {
				if got := sumInt64(t, rm, name, bc.system); got != n {
					t.Errorf("%s = %d, want %d", name, got, n)
				}
			}
			for _, hist := range []string{"messaging.process.duration", "eventsource.event.latency"} {
				got := histogramCounts(t, rm, hist, bc.system)
				for outcome, n := range outcomes {
					if got[outcome] != n {
						t.Errorf("%s count with outcome %s = %d, want %d (all: %v)", hist, outcome, got[outcome], n, got)
					}
				}
			}
			checkNoIDs(t, rm)
		})
	}
}

// subscribeMix subscribes one handler per event type of the mix.
func subscribeMix(t *testing.T, b bus.Bus) {
	t.Helper()
	var mu sync.Mutex
	failed := map[string]bool{}
	errBoom := errors.New("boom")
	subs := []error{
		sub(bus.On(b, func(context.Context, Good, eventsource.Envelope) error { return nil })),
		sub(bus.On(b, func(_ context.Context, _ Flaky, env eventsource.Envelope) error {
			mu.Lock()
			defer mu.Unlock()
			if !failed[env.ID.String()] {
				failed[env.ID.String()] = true
				return errBoom
			}
			return nil
		})),
		sub(bus.On(b, func(context.Context, Failing, eventsource.Envelope) error { return errBoom })),
		sub(bus.On(b, func(context.Context, Poisonous, eventsource.Envelope) error { return bus.Permanent(errBoom) })),
	}
	if err := errors.Join(subs...); err != nil {
		t.Fatal(err)
	}
}

func sub(_ bus.Subscription, err error) error { return err }

func envelope(e eventsource.Event, aggregateID string) eventsource.Envelope {
	env := eventsource.NewEnvelope(e)
	env.AggregateType, env.AggregateID, env.Version = "OtelAccount", aggregateID, 1
	return env
}

// find returns the metric named name, failing the test when it is absent.
func find(t *testing.T, rm metricdata.ResourceMetrics, name string) metricdata.Metrics {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	t.Fatalf("no metric %s", name)
	return metricdata.Metrics{}
}

func hasSystem(attrs attribute.Set, system string) bool {
	v, ok := attrs.Value("messaging.system")
	return ok && v.AsString() == system
}

func sumInt64(t *testing.T, rm metricdata.ResourceMetrics, name, system string) int64 {
	t.Helper()
	var n int64
	switch d := find(t, rm, name).Data.(type) {
	case metricdata.Sum[int64]:
		for _, dp := range d.DataPoints {
			if hasSystem(dp.Attributes, system) {
				n += dp.Value
			}
		}
	case metricdata.Gauge[int64]:
		for _, dp := range d.DataPoints {
			if hasSystem(dp.Attributes, system) {
				n += dp.Value
			}
		}
	default:
		t.Fatalf("%s is a %T", name, d)
	}
	return n
}

// histogramCounts returns a histogram's counts by outcome.
func histogramCounts(t *testing.T, rm metricdata.ResourceMetrics, name, system string) map[string]uint64 {
	t.Helper()
	d, ok := find(t, rm, name).Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is not a float histogram", name)
	}
	out := map[string]uint64{}
	for _, dp := range d.DataPoints {
		if !hasSystem(dp.Attributes, system) {
			continue
		}
		o, _ := dp.Attributes.Value(otel.OutcomeKey)
		out[o.AsString()] += dp.Count
	}
	return out
}

// checkNoIDs fails if any data point carries an event, aggregate or
// message ID: they would make a series per event.
func checkNoIDs(t *testing.T, rm metricdata.ResourceMetrics) {
	t.Helper()
	banned := []attribute.Key{"messaging.message.id", otel.AggregateIDKey, otel.StreamIDKey}
	check := func(name string, attrs attribute.Set) {
		for _, k := range banned {
			if attrs.HasValue(k) {
				t.Errorf("metric %s has attribute %s", name, k)
			}
		}
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					check(m.Name, dp.Attributes)
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					check(m.Name, dp.Attributes)
				}
			}
		}
	}
}

// TestBrokerLag checks that a wrapped broker bus reports its group's lag
// (bus.LagReporter) as eventsource.broker.lag, by kind, and that Close
// stops it.
func TestBrokerLag(t *testing.T) {
	kinds := map[string][]bus.LagKind{
		otel.SystemRedis:    {bus.LagBacklog, bus.LagPending},
		otel.SystemRabbitMQ: {bus.LagQueueDepth},
		otel.SystemKafka:    {bus.LagConsumer},
	}
	for _, bc := range busCases() {
		if !bc.broker {
			continue
		}
		t.Run(bc.system, func(t *testing.T) {
			tel, _, _, reader := recording(t, false, true)
			b := bc.open(t, tel)
			subscribeMix(t, b)
			ctx := context.Background()
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(ctx, &rm); err != nil {
				t.Fatal(err)
			}
			g, ok := find(t, rm, "eventsource.broker.lag").Data.(metricdata.Gauge[int64])
			if !ok {
				t.Fatal("eventsource.broker.lag is not an int64 gauge")
			}
			got := map[string]bool{}
			for _, dp := range g.DataPoints {
				kind, _ := dp.Attributes.Value(otel.LagKindKey)
				group, _ := dp.Attributes.Value("messaging.consumer.group.name")
				if !hasSystem(dp.Attributes, bc.system) || group.AsString() != "g" {
					t.Errorf("lag point attributes %v", dp.Attributes.ToSlice())
				}
				got[kind.AsString()] = true
			}
			for _, k := range kinds[bc.system] {
				if !got[string(k)] {
					t.Errorf("no lag of kind %s; got %v", k, got)
				}
			}
			closeBus(t, b)
			rm = metricdata.ResourceMetrics{}
			if err := reader.Collect(ctx, &rm); err != nil {
				t.Fatalf("collecting after Close: %v", err)
			}
		})
	}
}
