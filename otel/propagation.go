package otel

import (
	"context"
	"encoding/hex"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsource-go/eventsource"
)

// The envelope carries W3C trace context in two metadata fields, so the
// format is W3C's whatever the process's global propagator is: the fields
// are the wire format other services read. Version 00, what every
// implementation writes, is formatted and parsed here directly, which
// saves the propagator's context and carrier allocations on every event;
// anything else goes through OpenTelemetry's propagator.
var w3c propagation.TraceContext

// traceParentLen is the length of a version-00 traceparent:
// "00-" + 32 hex + "-" + 16 hex + "-" + 2 hex.
const traceParentLen = 55

// w3cFlags are the flags version 00 defines; as the propagator does,
// inject writes no other and extract refuses a traceparent with another.
const w3cFlags = trace.FlagsSampled | trace.FlagsRandom

// inject writes sc into md; an invalid sc leaves md as it is.
func inject(sc trace.SpanContext, md *eventsource.Metadata) {
	if !sc.IsValid() {
		return
	}
	var buf [traceParentLen]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	copy(buf[:], "00-")
	hex.Encode(buf[3:35], tid[:])
	buf[35] = '-'
	hex.Encode(buf[36:52], sid[:])
	buf[52] = '-'
	hex.Encode(buf[53:55], []byte{byte(sc.TraceFlags() & w3cFlags)})
	md.TraceParent = string(buf[:])
	md.TraceState = ""
	if ts := sc.TraceState(); ts.Len() > 0 {
		md.TraceState = ts.String()
	}
}

// carries reports whether md holds a version-00 traceparent of sc's trace
// and sampling decision, and sc's trace state.
func carries(md *eventsource.Metadata, sc trace.SpanContext) bool {
	tp := md.TraceParent
	if len(tp) != traceParentLen || tp[:3] != "00-" || !sc.IsValid() {
		return false
	}
	var want [34]byte
	tid := sc.TraceID()
	hex.Encode(want[:32], tid[:])
	hex.Encode(want[32:], []byte{byte(sc.TraceFlags() & w3cFlags)})
	if tp[3:35] != string(want[:32]) || tp[53:55] != string(want[32:]) {
		return false
	}
	ts := sc.TraceState()
	return md.TraceState == "" && ts.Len() == 0 || md.TraceState != "" && ts.Len() > 0 && md.TraceState == ts.String()
}

// extract returns the span context md carries; it is invalid when md
// carries none or a malformed one.
func extract(md *eventsource.Metadata) trace.SpanContext {
	tp := md.TraceParent
	if tp == "" {
		return trace.SpanContext{}
	}
	if len(tp) != traceParentLen || tp[:3] != "00-" || tp[35] != '-' || tp[52] != '-' {
		// A copy, so that md (often a field of an envelope on the
		// caller's stack) does not escape through the carrier.
		c := metadataCarrier{&eventsource.Metadata{TraceParent: md.TraceParent, TraceState: md.TraceState}}
		return trace.SpanContextFromContext(w3c.Extract(context.Background(), c))
	}
	tid, err := trace.TraceIDFromHex(tp[3:35])
	if err != nil {
		return trace.SpanContext{}
	}
	sid, err := trace.SpanIDFromHex(tp[36:52])
	if err != nil {
		return trace.SpanContext{}
	}
	var flags [1]byte
	if _, err := hex.Decode(flags[:], []byte(tp[53:55])); err != nil || trace.TraceFlags(flags[0])&^w3cFlags != 0 {
		return trace.SpanContext{}
	}
	cfg := trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags[0]), Remote: true}
	if md.TraceState != "" {
		// A malformed tracestate is dropped, as the propagator does.
		if ts, err := trace.ParseTraceState(md.TraceState); err == nil {
			cfg.TraceState = ts
		}
	}
	return trace.NewSpanContext(cfg)
}

// metadataCarrier adapts the trace fields of Metadata to the propagator.
type metadataCarrier struct{ md *eventsource.Metadata }

func (c metadataCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.md.TraceParent
	case "tracestate":
		return c.md.TraceState
	}
	return ""
}

func (c metadataCarrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.md.TraceParent = value
	case "tracestate":
		c.md.TraceState = value
	}
}

func (c metadataCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }
