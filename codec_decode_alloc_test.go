package eventsource_test

import (
	"testing"

	"github.com/eventsource-go/eventsource"
)

// TestUnmarshalMetadataAllocations: a consumer pays for an event's
// metadata only the strings it keeps (every traced event carries a
// traceparent), not for reading past it.
func TestUnmarshalMetadataAllocations(t *testing.T) {
	codec := eventsource.NewJSONCodec(newRegistry(t))
	env := eventsource.NewEnvelope(Deposited{Account: "acc-1", Cents: 250})
	env.AggregateType, env.AggregateID, env.Version = "Account", "acc-1", 3
	plain, err := codec.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	env.Metadata = eventsource.Metadata{CorrelationID: "c-1",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	traced, err := codec.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	allocs := func(b []byte) float64 {
		return testing.AllocsPerRun(200, func() {
			if _, err := codec.Unmarshal(b); err != nil {
				t.Fatal(err)
			}
		})
	}
	base, withMD := allocs(plain), allocs(traced)
	// Two strings kept; the metadata struct is part of the envelope.
	if extra := withMD - base; extra > 2 {
		t.Fatalf("metadata with two fields costs %v allocations on top of %v, want at most 2", extra, base)
	}
}
