package otel_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/otel"
)

// TestRetriesAndReplaysStayInTrace: every attempt of an event, its
// retries and its run after a dead-letter replay, is a consumer span whose
// parent is the event's producer span, in the publisher's trace.
func TestRetriesAndReplaysStayInTrace(t *testing.T) {
	for _, bc := range busCases() {
		if !bc.broker {
			continue
		}
		t.Run(bc.system, func(t *testing.T) {
			tel, tp, rec, _ := recording(t, true, false)
			b := bc.open(t, tel)
			var healed atomic.Bool
			var flaky atomic.Int64
			errBoom := errors.New("boom")
			if err := errors.Join(
				sub(bus.On(b, func(context.Context, Flaky, eventsource.Envelope) error {
					if flaky.Add(1) == 1 {
						return errBoom
					}
					return nil
				})),
				sub(bus.On(b, func(context.Context, Failing, eventsource.Envelope) error {
					if !healed.Load() {
						return errBoom
					}
					return nil
				})),
			); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
			pctx, root := tp.Tracer("test").Start(ctx, "command")
			if err := b.Publish(pctx, envelope(Flaky{}, "f"), envelope(Failing{}, "x")); err != nil {
				t.Fatal(err)
			}
			root.End()
			waitUntil(t, "both events settled", func() bool {
				st := b.Stats()
				return st.Handled+st.DeadLettered == 2 && st.InFlight == 0
			})
			healed.Store(true)
			admin := bus.Unwrap(b).(interface{ DeadLetters() consumer.Admin }).DeadLetters()
			if n, err := admin.ReplayAll(ctx); err != nil || n != 1 {
				t.Fatalf("ReplayAll = %d, %v; want 1", n, err)
			}
			waitUntil(t, "the replay handled", func() bool { return b.Stats().Handled == 2 })
			waitUntil(t, "6 consumer spans", func() bool {
				return len(spansNamed(rec.Ended(), "process OtelFlaky"))+len(spansNamed(rec.Ended(), "process OtelFailing")) == 2+3+1
			})
			for _, typ := range []string{"OtelFlaky", "OtelFailing"} {
				producers := spansNamed(rec.Ended(), "publish "+typ)
				if len(producers) != 1 {
					t.Fatalf("%d publish spans of %s", len(producers), typ)
				}
				for _, c := range spansNamed(rec.Ended(), "process "+typ) {
					if c.Parent().SpanID() != producers[0].SpanContext().SpanID() || c.SpanContext().TraceID() != root.SpanContext().TraceID() {
						t.Errorf("a %s run's parent is %s in trace %s; want the producer %s in %s", typ,
							c.Parent().SpanID(), c.SpanContext().TraceID(), producers[0].SpanContext().SpanID(), root.SpanContext().TraceID())
					}
				}
			}
		})
	}
}

// TestPanicsAndTimeoutsCounted: a panicking handler and one that overruns
// its bus.Timeout are measured once per run, with the outcome the bus
// counts, and the in-flight gauge is back to 0 once they are settled.
func TestPanicsAndTimeoutsCounted(t *testing.T) {
	for _, bc := range busCases() {
		t.Run(bc.system, func(t *testing.T) {
			tel, _, _, reader := recording(t, false, true)
			b := bc.open(t, tel)
			if err := errors.Join(
				sub(bus.On(b, func(context.Context, Good, eventsource.Envelope) error { panic("boom") })),
				sub(bus.On(b, func(ctx context.Context, _ Failing, _ eventsource.Envelope) error {
					<-ctx.Done()
					return ctx.Err()
				}, bus.WithMiddleware(bus.Timeout(10*time.Millisecond)))),
			); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if err := b.Publish(ctx, envelope(Good{}, "p"), envelope(Failing{}, "t")); err != nil {
				t.Fatal(err)
			}
			if bc.broker {
				waitUntil(t, "both dead-lettered", func() bool {
					st := b.Stats()
					return st.DeadLettered == 2 && st.InFlight == 0
				})
			}
			st := b.Stats()
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(ctx, &rm); err != nil {
				t.Fatal(err)
			}
			got := histogramCounts(t, rm, "messaging.process.duration", bc.system)
			if got[otel.OutcomePanic] != st.HandlerPanics || got[otel.OutcomeError] != st.HandlerErrors-st.HandlerPanics {
				t.Errorf("outcomes %v; the bus counts %d panics of %d errors", got, st.HandlerPanics, st.HandlerErrors)
			}
			if n := sumInt64(t, rm, "eventsource.bus.in_flight", bc.system); n != 0 {
				t.Errorf("in flight = %d after settling", n)
			}
			closeBus(t, b)
			rm = metricdata.ResourceMetrics{}
			if err := reader.Collect(ctx, &rm); err != nil {
				t.Fatal(err)
			}
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == "eventsource.bus.in_flight" {
						for _, dp := range g.DataPoints {
							if hasSystem(dp.Attributes, bc.system) {
								t.Errorf("in flight still reported after Close: %d", dp.Value)
							}
						}
					}
				}
			}
		})
	}
}

// lagless is an in-process bus whose broker cannot tell its lag.
type lagless struct{ *bus.InProcess }

func (lagless) Lag(context.Context) ([]bus.Lag, error) { return nil, errors.New("broker unreachable") }

// exportCapture keeps what a periodic reader exports.
type exportCapture struct {
	mu  sync.Mutex
	got []metricdata.ResourceMetrics
}

func (e *exportCapture) Temporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	return sdkmetric.DefaultTemporalitySelector(k)
}
func (e *exportCapture) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return sdkmetric.DefaultAggregationSelector(k)
}
func (e *exportCapture) Export(_ context.Context, rm *metricdata.ResourceMetrics) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, *rm)
	return nil
}
func (e *exportCapture) ForceFlush(context.Context) error { return nil }
func (e *exportCapture) Shutdown(context.Context) error   { return nil }

// TestBrokerLagFailureKeepsOtherMetrics: while the broker cannot tell its
// lag, a periodic reader (what OTLP exporters use) still exports every
// other measurement: the bus's counters, the handlers' durations and
// whatever else the application measures on the same provider.
func TestBrokerLagFailureKeepsOtherMetrics(t *testing.T) {
	exp := &exportCapture{}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	tel, err := otel.New(otel.WithMeterProvider(mp), otel.WithTracerProvider(tracenoop.NewTracerProvider()))
	if err != nil {
		t.Fatal(err)
	}
	bt := tel.Bus(otel.SystemRedis, "g")
	b := bt.Wrap(lagless{bus.NewInProcess(bus.WithLogger(quiet()), bus.WithHandlerMiddleware(bt.Middleware()))})
	t.Cleanup(func() { closeBus(t, b) })
	if _, err := bus.On(b, func(context.Context, Good, eventsource.Envelope) error { return nil }); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Publish(ctx, envelope(Good{}, "a")); err != nil {
		t.Fatal(err)
	}
	flushErr := mp.ForceFlush(ctx)
	exp.mu.Lock()
	defer exp.mu.Unlock()
	if len(exp.got) != 1 {
		t.Fatalf("%d exports while the lag is unknown (ForceFlush: %v); want 1", len(exp.got), flushErr)
	}
	if n := sumInt64(t, exp.got[0], "messaging.client.sent.messages", otel.SystemRedis); n != 1 {
		t.Errorf("sent messages = %d, want 1", n)
	}
	find(t, exp.got[0], "messaging.process.duration")
}

// TestMetricsCarrySemconvRequiredAttributes checks the attributes the
// messaging semantic conventions require of the metrics named after them:
// messaging.system and messaging.operation.name on every point, and
// error.type on the points of failed operations.
func TestMetricsCarrySemconvRequiredAttributes(t *testing.T) {
	tel, _, _, reader := recording(t, false, true)
	bt := tel.Bus(otel.SystemInProcess, "")
	b := bt.Wrap(bus.NewInProcess(bus.WithLogger(quiet()), bus.WithHandlerMiddleware(bt.Middleware())))
	t.Cleanup(func() { closeBus(t, b) })
	subscribeMix(t, b)
	ctx := context.Background()
	if err := b.Publish(ctx, envelope(Good{}, "a"), envelope(Failing{}, "b"), envelope(Poisonous{}, "c")); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	check := func(name, operation string, attrs attribute.Set, failed bool) {
		t.Helper()
		if v, ok := attrs.Value("messaging.operation.name"); !ok || v.AsString() != operation {
			t.Errorf("%s point %v: messaging.operation.name is not %q", name, attrs.ToSlice(), operation)
		}
		if !attrs.HasValue("messaging.system") {
			t.Errorf("%s point %v has no messaging.system", name, attrs.ToSlice())
		}
		if attrs.HasValue("error.type") != failed {
			t.Errorf("%s point %v: error.type present %v, want %v", name, attrs.ToSlice(), !failed, failed)
		}
	}
	for _, name := range []string{"messaging.process.duration", "messaging.client.operation.duration"} {
		operation := map[string]string{"messaging.process.duration": "process", "messaging.client.operation.duration": "publish"}[name]
		h := find(t, rm, name).Data.(metricdata.Histogram[float64])
		for _, dp := range h.DataPoints {
			o, _ := dp.Attributes.Value(otel.OutcomeKey)
			check(name, operation, dp.Attributes, o.Type() != attribute.INVALID && o.AsString() != otel.OutcomeOK)
		}
	}
	for _, dp := range find(t, rm, "messaging.client.sent.messages").Data.(metricdata.Sum[int64]).DataPoints {
		check("messaging.client.sent.messages", "publish", dp.Attributes, false)
	}
}

// TestLatencyNeverNegative: an event stamped by a host whose clock is
// ahead of the consumer's records a latency of 0, not a negative value: a
// histogram's sum must not decrease (Prometheus would read a reset).
func TestLatencyNeverNegative(t *testing.T) {
	tel, _, _, reader := recording(t, false, true)
	bt := tel.Bus(otel.SystemInProcess, "")
	b := bt.Wrap(bus.NewInProcess(bus.WithLogger(quiet()), bus.WithHandlerMiddleware(bt.Middleware())))
	t.Cleanup(func() { closeBus(t, b) })
	if _, err := bus.On(b, func(context.Context, Good, eventsource.Envelope) error { return nil }); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	env := envelope(Good{}, "a")
	env.OccurredAt = time.Now().Add(time.Minute) // the producer's clock is a minute ahead
	if err := b.Publish(ctx, env); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	for _, dp := range find(t, rm, "eventsource.event.latency").Data.(metricdata.Histogram[float64]).DataPoints {
		if dp.Sum < 0 {
			t.Errorf("latency sum %v over %d runs, want >= 0", dp.Sum, dp.Count)
		}
	}
}

// stuckLag is an in-process bus whose broker does not answer: Lag waits,
// as a broker bus waits for a connection that is down, until its ctx ends
// or the test releases it.
type stuckLag struct {
	*bus.InProcess
	asked   chan struct{} // closed by the first Lag call
	once    sync.Once
	release chan struct{}
}

func (s *stuckLag) Lag(ctx context.Context) ([]bus.Lag, error) {
	s.once.Do(func() { close(s.asked) })
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.release:
		return nil, errors.New("released by the test")
	}
}

func newStuckLag(t *testing.T, opts ...otel.Option) (*otel.Telemetry, *sdkmetric.ManualReader, *stuckLag, bus.Bus) {
	t.Helper()
	tel, _, _, reader := recording(t, false, true, opts...)
	stuck := &stuckLag{InProcess: bus.NewInProcess(bus.WithLogger(quiet())), asked: make(chan struct{}), release: make(chan struct{})}
	b := tel.Bus(otel.SystemRabbitMQ, "g").Wrap(stuck)
	t.Cleanup(func() { closeBus(t, b) })
	// Runs first: frees the lag read a failed run left waiting.
	t.Cleanup(func() { close(stuck.release) })
	return tel, reader, stuck, b
}

// TestCloseDoesNotWaitForAStuckLagRead: Close returns within its ctx while
// a collection (a Prometheus scrape, whose ctx never ends) waits for the
// broker's lag: unregistering the callbacks waits for collections in
// progress, so Close must first end the lag read it is waiting for.
func TestCloseDoesNotWaitForAStuckLagRead(t *testing.T) {
	_, reader, stuck, b := newStuckLag(t)
	collected := make(chan error, 1)
	go func() {
		var rm metricdata.ResourceMetrics
		collected <- reader.Collect(context.Background(), &rm)
	}()
	<-stuck.asked
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		closed <- b.Close(ctx)
	}()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits for the broker's lag 10s later, past its ctx's 2s")
	}
	<-collected
}

// TestStuckLagReadIsBounded: a collection whose ctx has no deadline (a
// Prometheus scrape) is not held by a broker that does not answer: the
// lag read has a deadline of its own, and the other measurements are
// collected.
func TestStuckLagReadIsBounded(t *testing.T) {
	_, reader, _, _ := newStuckLag(t, otel.WithLagTimeout(50*time.Millisecond))
	collected := make(chan metricdata.ResourceMetrics, 1)
	go func() {
		var rm metricdata.ResourceMetrics
		_ = reader.Collect(context.Background(), &rm)
		collected <- rm
	}()
	select {
	case rm := <-collected:
		find(t, rm, "messaging.client.sent.messages")
	case <-time.After(10 * time.Second):
		t.Fatal("a collection still waits for the broker's lag 10s later")
	}
}
