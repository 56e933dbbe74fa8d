package eventsource_test

import (
	"context"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
)

type otherKey struct{}

func TestMetadataContext(t *testing.T) {
	if _, ok := eventsource.MetadataFrom(context.Background()); ok {
		t.Fatal("a bare context carries metadata")
	}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), otherKey{}, "v"))
	md := eventsource.Metadata{CorrelationID: "c-1", TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Extra: map[string]string{"k": "v"}}
	ctx := eventsource.WithMetadata(parent, md)
	got, ok := eventsource.MetadataFrom(ctx)
	if !ok || got.CorrelationID != "c-1" || got.TraceParent != md.TraceParent || got.Extra["k"] != "v" {
		t.Fatalf("MetadataFrom = %+v, %v; want %+v", got, ok, md)
	}
	got.CorrelationID = "changed" // a copy: the context's stays
	if again, _ := eventsource.MetadataFrom(ctx); again.CorrelationID != "c-1" {
		t.Fatalf("changing the returned metadata changed the context's: %q", again.CorrelationID)
	}
	if ctx.Value(otherKey{}) != "v" {
		t.Fatal("the parent's values are hidden")
	}
	// The innermost metadata wins.
	inner := eventsource.WithMetadata(ctx, eventsource.Metadata{CorrelationID: "c-2"})
	if got, _ := eventsource.MetadataFrom(inner); got.CorrelationID != "c-2" {
		t.Fatalf("inner metadata = %q, want c-2", got.CorrelationID)
	}
	// Cancellation flows through it, also to contexts derived from it.
	child, stop := context.WithTimeout(inner, time.Hour)
	defer stop()
	cancel()
	select {
	case <-child.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("cancelling the parent did not reach a context derived from the metadata's")
	}
	if ctx.Err() != context.Canceled {
		t.Fatalf("Err = %v, want context.Canceled", ctx.Err())
	}
}

// Every handler run on a broker bus attaches the event's metadata to its
// context: one allocation, not two.
func TestWithMetadataAllocatesOnce(t *testing.T) {
	md := eventsource.Metadata{CorrelationID: "c-1", TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	ctx := context.Background()
	var sink context.Context
	allocs := testing.AllocsPerRun(1000, func() { sink = eventsource.WithMetadata(ctx, md) })
	if allocs != 1 {
		t.Fatalf("WithMetadata allocates %v times, want 1", allocs)
	}
	allocs = testing.AllocsPerRun(1000, func() {
		if _, ok := eventsource.MetadataFrom(sink); !ok {
			t.Fatal("no metadata")
		}
	})
	if allocs != 0 {
		t.Fatalf("MetadataFrom allocates %v times, want 0", allocs)
	}
}
