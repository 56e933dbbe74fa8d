package otel

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/eventsource-go/eventsource"
)

// TestTraceContextMatchesW3CPropagator checks the direct format and parse
// against OpenTelemetry's propagator, both ways.
func TestTraceContextMatchesW3CPropagator(t *testing.T) {
	ts, err := trace.ParseTraceState("vendor=abc,other=x1")
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range []trace.SpanContext{
		trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
			SpanID:  trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}, TraceFlags: trace.FlagsSampled}),
		trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceState: ts}),
	} {
		var ours, theirs eventsource.Metadata
		inject(sc, &ours)
		w3c.Inject(trace.ContextWithSpanContext(context.Background(), sc), metadataCarrier{&theirs})
		if ours.TraceParent != theirs.TraceParent || ours.TraceState != theirs.TraceState {
			t.Errorf("inject wrote %+v, the propagator %+v", ours, theirs)
		}
		want := trace.SpanContextFromContext(w3c.Extract(context.Background(), metadataCarrier{&theirs}))
		if got := extract(&theirs); !got.Equal(want) {
			t.Errorf("extract = %+v, the propagator %+v", got, want)
		}
	}
	for _, bad := range []string{"garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz"} {
		if sc := extract(&eventsource.Metadata{TraceParent: bad}); sc.IsValid() {
			t.Errorf("extract(%q) is valid", bad)
		}
	}
}

// TestTraceFlagsAsW3CPropagator: version 00 defines the sampled and random
// flags only; like OpenTelemetry's propagator, extract refuses a
// traceparent with another flag set and inject writes those two only, so
// that an event never carries a traceparent other services reject.
func TestTraceFlagsAsW3CPropagator(t *testing.T) {
	for _, flags := range []string{"04", "05", "80", "ff"} {
		md := eventsource.Metadata{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-" + flags}
		want := trace.SpanContextFromContext(w3c.Extract(context.Background(), metadataCarrier{&md}))
		if got := extract(&md); !got.Equal(want) {
			t.Errorf("extract(flags %s) = %+v, the propagator %+v", flags, got, want)
		}
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: 0xff})
	var ours, theirs eventsource.Metadata
	inject(sc, &ours)
	w3c.Inject(trace.ContextWithSpanContext(context.Background(), sc), metadataCarrier{&theirs})
	if ours.TraceParent != theirs.TraceParent {
		t.Errorf("inject wrote %s, the propagator %s", ours.TraceParent, theirs.TraceParent)
	}
}
