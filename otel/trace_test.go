package otel_test

import (
	"context"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/otel"
	"github.com/eventsource-go/eventsource/repository"
)

// TestTraceFromSaveToEveryHandler saves two events inside a span and
// checks that one trace links the save, its append, a producer span per
// event and a consumer span per event and handler, on every bus, with
// the repository publishing directly and through the outbox relay.
func TestTraceFromSaveToEveryHandler(t *testing.T) {
	for _, bc := range busCases() {
		for _, outbox := range []bool{false, true} {
			name := bc.system + "/direct"
			if outbox {
				name = bc.system + "/outbox"
			}
			t.Run(name, func(t *testing.T) {
				tel, tp, rec, _ := recording(t, true, false)
				b := bc.open(t, tel)
				var runs atomic.Int64
				for _, h := range []string{"first", "second"} {
					if _, err := bus.On(b, func(context.Context, Good, eventsource.Envelope) error {
						runs.Add(1)
						return nil
					}, bus.WithName(h)); err != nil {
						t.Fatal(err)
					}
				}
				ctx := context.Background()
				if err := b.Start(ctx); err != nil {
					t.Fatal(err)
				}
				store := eventstore.NewMemory()
				repo := repository.New(store, b, newAccount, repository.WithInstrumentation(tel.Repository()))
				var relay *repository.Relay
				if outbox {
					relay = repository.NewRelay("otel", store, eventstore.NewMemoryCheckpoints(), b)
					repo = repository.New(store, nil, newAccount, repository.WithOutbox(relay),
						repository.WithInstrumentation(tel.Repository()))
				}

				cmdCtx, root := tp.Tracer("test").Start(ctx, "command")
				a := newAccount()
				a.SetID("acct-1")
				a.Raise(Good{N: 1})
				a.Raise(Good{N: 2})
				if err := repo.Save(cmdCtx, a); err != nil {
					t.Fatal(err)
				}
				root.End()
				if outbox {
					// A relay publishes from its own loop: no span in its ctx.
					if _, err := relay.PublishPending(ctx); err != nil {
						t.Fatal(err)
					}
				}
				waitUntil(t, "4 consumer spans", func() bool { return len(spansNamed(rec.Ended(), "process OtelGood")) == 4 })
				checkTrace(t, rec.Ended(), root.SpanContext())
			})
		}
	}
}

func spansNamed(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

func checkTrace(t *testing.T, spans []sdktrace.ReadOnlySpan, root trace.SpanContext) {
	t.Helper()
	for _, s := range spans {
		if s.SpanContext().TraceID() != root.TraceID() {
			t.Errorf("span %q is in trace %s, not the command's %s", s.Name(), s.SpanContext().TraceID(), root.TraceID())
		}
	}
	one := func(name string) sdktrace.ReadOnlySpan {
		t.Helper()
		got := spansNamed(spans, name)
		if len(got) != 1 {
			t.Fatalf("%d spans named %q, want 1", len(got), name)
		}
		return got[0]
	}
	save := one("save OtelAccount")
	if save.Parent().SpanID() != root.SpanID() {
		t.Errorf("save span's parent is %s, want the command span %s", save.Parent().SpanID(), root.SpanID())
	}
	if app := one("append"); app.Parent().SpanID() != save.SpanContext().SpanID() {
		t.Errorf("append span's parent is %s, want the save span", app.Parent().SpanID())
	}
	producers := map[string]sdktrace.ReadOnlySpan{} // by event ID
	for _, p := range spansNamed(spans, "publish OtelGood") {
		if p.SpanKind() != trace.SpanKindProducer {
			t.Errorf("publish span kind %v", p.SpanKind())
		}
		if p.Parent().SpanID() != save.SpanContext().SpanID() {
			t.Errorf("publish span's parent is %s, want the save span %s", p.Parent().SpanID(), save.SpanContext().SpanID())
		}
		producers[attr(p, "messaging.message.id")] = p
	}
	if len(producers) != 2 {
		t.Fatalf("%d publish spans, want one per event (2)", len(producers))
	}
	perEvent := map[string]int{}
	for _, c := range spansNamed(spans, "process OtelGood") {
		if c.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("process span kind %v", c.SpanKind())
		}
		id := attr(c, "messaging.message.id")
		p, ok := producers[id]
		if !ok {
			t.Errorf("process span for event %q, which has no publish span", id)
			continue
		}
		if c.Parent().SpanID() != p.SpanContext().SpanID() {
			t.Errorf("process span of %s has parent %s, want its publish span %s", id, c.Parent().SpanID(), p.SpanContext().SpanID())
		}
		if attr(c, "messaging.operation.type") != "process" || attr(c, "messaging.destination.name") != "OtelGood" {
			t.Errorf("process span attributes: %v", c.Attributes())
		}
		perEvent[id]++
	}
	for id, n := range perEvent {
		if n != 2 {
			t.Errorf("event %s has %d process spans, want one per handler (2)", id, n)
		}
	}
}

// TestHandlerNameLabels checks that spans and measurements name the
// subscription, on every bus (each builds its chains with bus.ChainFor).
func TestHandlerNameLabels(t *testing.T) {
	for _, bc := range busCases() {
		t.Run(bc.system, func(t *testing.T) {
			tel, _, rec, reader := recording(t, true, true)
			b := bc.open(t, tel)
			for _, name := range []string{"audit", "mailer"} {
				if _, err := bus.On(b, func(context.Context, Good, eventsource.Envelope) error { return nil }, bus.WithName(name)); err != nil {
					t.Fatal(err)
				}
			}
			ctx := context.Background()
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if err := b.Publish(ctx, envelope(Good{}, "a")); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "2 consumer spans", func() bool { return len(spansNamed(rec.Ended(), "process OtelGood")) == 2 })
			names := map[string]bool{}
			for _, s := range spansNamed(rec.Ended(), "process OtelGood") {
				names[attr(s, otel.HandlerKey)] = true
			}
			if !names["audit"] || !names["mailer"] {
				t.Errorf("process spans name handlers %v, want audit and mailer", names)
			}
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(ctx, &rm); err != nil {
				t.Fatal(err)
			}
			hist, ok := find(t, rm, "messaging.process.duration").Data.(metricdata.Histogram[float64])
			if !ok {
				t.Fatal("messaging.process.duration is not a float histogram")
			}
			counts := map[string]uint64{}
			for _, dp := range hist.DataPoints {
				v, _ := dp.Attributes.Value(otel.HandlerKey)
				counts[v.Emit()] += dp.Count
			}
			if counts["audit"] != 1 || counts["mailer"] != 1 || len(counts) != 2 {
				t.Errorf("process durations by handler %v, want audit and mailer once each", counts)
			}
		})
	}
}
