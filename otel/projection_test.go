package otel_test

import (
	"context"
	"database/sql"
	"testing"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/otel"
	"github.com/eventsource-go/eventsource/projection"
	"github.com/eventsource-go/eventsource/repository"
)

type countGood struct{ n int }

func (p *countGood) EventTypes() []string { return []string{"OtelGood"} }
func (p *countGood) Handle(context.Context, eventsource.Envelope) error {
	p.n++
	return nil
}
func (p *countGood) Reset(context.Context) error { p.n = 0; return nil }

// TestProjectionSpansAndLag: a projection run continues the trace of the
// save that stored its events, keeps Reset, and its lag is observed.
func TestProjectionSpansAndLag(t *testing.T) {
	ctx := context.Background()
	tel, _, rec, reader := recording(t, true, true)
	store := eventstore.NewMemory()
	repo := repository.New(store, nil, newAccount, repository.WithInstrumentation(tel.Repository()))
	a := newAccount()
	a.SetID("p1")
	a.Raise(Good{N: 1})
	a.Raise(Good{N: 2})
	if err := repo.Save(ctx, a); err != nil {
		t.Fatal(err)
	}

	p := &countGood{}
	wrapped := tel.Projection("counts", p)
	if _, ok := wrapped.(projection.Resetter); !ok {
		t.Fatal("the instrumented projection lost Reset")
	}
	runner := projection.NewRunner("counts", wrapped, store, eventstore.NewMemoryCheckpoints())
	reg, err := tel.ObserveFollower(otel.FollowerProjection, "counts", func() eventstore.FollowerStatus {
		return runner.Status().FollowerStatus
	})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	if _, err := runner.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if p.n != 2 {
		t.Fatalf("the projection applied %d events, want 2", p.n)
	}
	save := spansNamed(rec.Ended(), "save OtelAccount")
	runs := spansNamed(rec.Ended(), "process OtelGood")
	if len(save) != 1 || len(runs) != 2 {
		t.Fatalf("%d save and %d process spans, want 1 and 2", len(save), len(runs))
	}
	for _, r := range runs {
		if r.Parent().SpanID() != save[0].SpanContext().SpanID() {
			t.Errorf("projection span's parent is %s, want the save span", r.Parent().SpanID())
		}
		if attr(r, otel.FollowerNameKey) != "counts" {
			t.Errorf("projection span attributes %v", r.Attributes())
		}
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	lag, ok := find(t, rm, "eventsource.follower.lag").Data.(metricdata.Gauge[int64])
	if !ok || len(lag.DataPoints) != 1 || lag.DataPoints[0].Value != 0 {
		t.Errorf("follower lag = %+v, want one point at 0 after catching up", lag)
	}
}

type sqlCount struct{ n, resets int }

func (p *sqlCount) EventTypes() []string { return []string{"OtelGood"} }
func (p *sqlCount) Apply(context.Context, *sql.Tx, eventsource.Envelope) error {
	p.n++
	return nil
}
func (p *sqlCount) Reset(context.Context, *sql.Tx) error { p.resets++; return nil }

// TestSQLProjectionSpans: the SQL projection wrapper applies under a span
// named for the projection, continues the event's trace, passes the
// transaction through and keeps Reset.
func TestSQLProjectionSpans(t *testing.T) {
	tel, tp, rec, _ := recording(t, true, true)
	p := &sqlCount{}
	wrapped := tel.SQLProjection("balances", p)
	r, ok := wrapped.(projection.SQLResetter)
	if !ok {
		t.Fatal("the instrumented SQL projection lost Reset")
	}
	ctx, parent := tp.Tracer("test").Start(context.Background(), "command")
	env := envelope(Good{N: 1}, "a")
	env.Metadata.TraceParent = "00-" + parent.SpanContext().TraceID().String() + "-" + parent.SpanContext().SpanID().String() + "-01"
	parent.End()
	if err := wrapped.Apply(context.Background(), nil, env); err != nil {
		t.Fatal(err)
	}
	if err := r.Reset(ctx, nil); err != nil || p.n != 1 || p.resets != 1 {
		t.Fatalf("applied %d, reset %d (%v); want 1 and 1", p.n, p.resets, err)
	}
	runs := spansNamed(rec.Ended(), "process OtelGood")
	if len(runs) != 1 || runs[0].Parent().SpanID() != parent.SpanContext().SpanID() || attr(runs[0], otel.FollowerNameKey) != "balances" {
		t.Fatalf("projection spans %v", runs)
	}
}
