package repository_test

import (
	"context"
	"errors"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/repository"
)

// recorder is an Instrumentation that stamps a trace parent and records
// what it was told.
type recorder struct {
	calls []string
	ends  []error
}

func (r *recorder) StartSave(ctx context.Context, aggregateType, streamID string, events []eventsource.Envelope) (context.Context, func(error)) {
	r.calls = append(r.calls, "save "+aggregateType+" "+streamID)
	for i := range events {
		events[i].Metadata.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	}
	return ctx, func(err error) { r.calls = append(r.calls, "end save"); r.ends = append(r.ends, err) }
}

func (r *recorder) StartAppend(ctx context.Context, streamID string, n int) (context.Context, func(error)) {
	r.calls = append(r.calls, "append")
	return ctx, func(error) { r.calls = append(r.calls, "end append") }
}

func TestSaveReportsToInstrumentation(t *testing.T) {
	ctx := context.Background()
	b := bus.NewInProcess()
	defer b.Close(ctx)
	var published []eventsource.Envelope
	_, _ = b.SubscribeAll(bus.HandlerFunc(func(_ context.Context, env eventsource.Envelope) error {
		published = append(published, env)
		return nil
	}))
	rec := &recorder{}
	store := eventstore.NewMemory()
	repo := repository.New(store, b, newAccount, repository.WithInstrumentation(rec))

	a := newAccount()
	a.SetID("a1")
	aggregate.Raise(a, Opened{Owner: "ann"})
	if err := repo.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	want := []string{"save Account Account-a1", "append", "end append", "end save"}
	if len(rec.calls) != len(want) {
		t.Fatalf("calls %q, want %q", rec.calls, want)
	}
	for i := range want {
		if rec.calls[i] != want[i] {
			t.Fatalf("calls %q, want %q", rec.calls, want)
		}
	}
	if rec.ends[0] != nil {
		t.Errorf("end of a good save got %v", rec.ends[0])
	}
	for env, err := range store.Load(ctx, "Account-a1", 1) {
		if err != nil {
			t.Fatal(err)
		}
		if env.Metadata.TraceParent == "" {
			t.Error("the stored event lacks the metadata the instrumentation set")
		}
	}
	if len(published) != 1 || published[0].Metadata.TraceParent == "" {
		t.Errorf("published %+v, want one event with the trace parent", published)
	}

	// A conflict ends the save with the error.
	stale := newAccount()
	stale.SetID("a1")
	aggregate.Raise(stale, Opened{Owner: "bob"})
	if err := repo.Save(ctx, stale); !errors.Is(err, eventsource.ErrConcurrencyConflict) {
		t.Fatalf("stale save: %v", err)
	}
	if last := rec.ends[len(rec.ends)-1]; !errors.Is(last, eventsource.ErrConcurrencyConflict) {
		t.Errorf("end of a conflicting save got %v", last)
	}
}
