package eventsource

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
)

// oracleUnmarshal decodes the wire format with encoding/json's reflection,
// as the codec once did (metadata included, through reflectedMetadata):
// the hand-written reader must agree with it.
func oracleUnmarshal(r *Registry, b []byte) (Envelope, error) {
	var w struct {
		ID            string             `json:"id"`
		Type          string             `json:"type"`
		AggregateType string             `json:"aggregate_type"`
		AggregateID   string             `json:"aggregate_id"`
		Version       int64              `json:"version"`
		Position      int64              `json:"position"`
		SchemaVersion int64              `json:"schema_version"`
		OccurredAt    time.Time          `json:"occurred_at"`
		Metadata      *reflectedMetadata `json:"metadata"`
		Data          json.RawMessage    `json:"data"`
	}
	malformed := func(err error) error { return &DecodeError{Kind: ErrMalformed, Cause: err} }
	if err := json.Unmarshal(b, &w); err != nil {
		return Envelope{}, malformed(err)
	}
	if w.Type == "" {
		return Envelope{}, malformed(errors.New("no type"))
	}
	id, err := uuid.Parse(w.ID)
	if err != nil {
		return Envelope{}, malformed(err)
	}
	if len(bytes.TrimSpace(w.Data)) == 0 {
		return Envelope{}, malformed(errors.New("no data"))
	}
	e, name, err := r.DecodeVersion(w.Type, int(min(w.SchemaVersion, 1<<31-1)), w.Data)
	if err != nil {
		return Envelope{}, err
	}
	env := Envelope{ID: id, Type: name, AggregateType: w.AggregateType, AggregateID: w.AggregateID,
		Version: w.Version, Position: w.Position, OccurredAt: w.OccurredAt, Event: e}
	if w.Metadata != nil {
		env.Metadata = Metadata(*w.Metadata)
	}
	return env, nil
}

type wirePayload struct {
	Name  string            `json:"name"`
	Count int               `json:"count"`
	Tags  map[string]string `json:"tags"`
}

func (wirePayload) EventType() string { return "WirePayload" }

func wireRegistry() *Registry {
	r := NewRegistry()
	MustRegister[wirePayload](r)
	return r
}

// wireEvolving is at schema version 3; its step from 1 ignores the
// payload (a shape whose every field was dropped), so that only the
// reader stands between invalid JSON and a decoded event.
type wireEvolving struct {
	Name string `json:"name"`
}

func (wireEvolving) EventType() string  { return "WireEvolving" }
func (wireEvolving) SchemaVersion() int { return 3 }

// fuzzRegistry has a plain type, a versioned one with a chain of two
// steps and a former name, and a versioned one missing its first step.
func fuzzRegistry() *Registry {
	r := wireRegistry()
	MustRegister[wireEvolving](r)
	r.MustRegisterUpcaster("WireEvolving", 1, func([]byte) ([]byte, error) { return []byte(`{"name":"v2"}`), nil })
	r.MustRegisterUpcaster("WireEvolving", 2, func(b []byte) ([]byte, error) { return b, nil })
	if err := r.RegisterRename("WireOld", "WireEvolving"); err != nil {
		panic(err)
	}
	MustRegister[wireVersioned](r)
	return r
}

func FuzzWireReaderMatchesEncodingJSON(f *testing.F) {
	codec := NewJSONCodec(fuzzRegistry())
	env := NewEnvelope(wirePayload{Name: "a\"b<é>", Count: 3, Tags: map[string]string{"k": "v"}})
	env.AggregateType, env.AggregateID, env.Version, env.Position = "Agg", "x\u2028y", 7, 9
	env.Metadata = Metadata{CorrelationID: "c", Extra: map[string]string{"a": "b"}}
	good, err := codec.Marshal(env)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"ID":"01890a5d-ac96-774b-bcce-b302099a8057","TYPE":"WirePayload","data":{"name":"n"},"version":null,"occurred_at":null}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","data":{},"data":[1],"extra":{"a":[1,{"b":"}"}]}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"Wire\u0050ayload","version":-0,"position":01,"data":{}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","occurred_at":"2026-01-02T03:04:05+01:00","metadata":null,"data":{"count":1e2}}`))
	f.Add([]byte(` {"type":"WirePayload"} `))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","schema_version":1,"data":{}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","Schema_Version":null,"data":{}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","schema_version":2,"data":{}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","schema_version":1.5,"data":{}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","data":{}} x`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WireOld","data":{"x":1}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WireEvolving","schema_version":2,"data":{"name":"n"}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WireEvolving","schema_version":1,"data":[1 2]}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WireVersioned","schema_version":1,"data":{}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"Unregistered","data":{"a":1,}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","type":null,"version":3,"version":null,"data":{}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","occurred_at":"2026-01-02T03:04:05Z","occurred_at":null,"data":{}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","metadata":{"correlation_id":"x","extra":{"a":"1"}},"metadata":{"tenant_id":"y","extra":{"b":"\u00e9"}},"data":{}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","metadata":{"tenant_id":5},"metadata":null,"data":{"tags":{"k":"\ud800"}}}`))
	f.Add([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"WirePayload","x":[[[{"a":-0.5e+3,"b":[true,false,null]}]]],"data":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gotErr := codec.Unmarshal(b)
		want, wantErr := oracleUnmarshal(codec.Registry, b)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("input %q: reader error %v, encoding/json error %v", b, gotErr, wantErr)
		}
		if gotErr != nil {
			var de *DecodeError
			if !errors.As(gotErr, &de) {
				t.Fatalf("input %q: error %v is not a *DecodeError", b, gotErr)
			}
			for _, kind := range []error{ErrMalformed, ErrUnknownEventType, ErrUnknownSchemaVersion} {
				if errors.Is(gotErr, kind) != errors.Is(wantErr, kind) {
					t.Fatalf("input %q: reader error %v, encoding/json error %v: kinds differ", b, gotErr, wantErr)
				}
			}
			// EnvelopeType judges the envelope's JSON as Unmarshal does.
			if _, err := EnvelopeType(b); err == nil && errors.Is(gotErr, ErrMalformed) && !json.Valid(b) {
				t.Fatalf("input %q: EnvelopeType accepts invalid JSON", b)
			}
			return
		}
		if typ, err := EnvelopeType(b); err != nil || codec.Registry.Canonical(typ) != got.Type {
			t.Fatalf("input %q: EnvelopeType = %q, %v; Unmarshal read %q", b, typ, err, got.Type)
		}
		if !got.OccurredAt.Equal(want.OccurredAt) {
			t.Fatalf("input %q: occurred_at %v, encoding/json %v", b, got.OccurredAt, want.OccurredAt)
		}
		got.OccurredAt, want.OccurredAt = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("input %q:\n reader %#v\n  json  %#v", b, got, want)
		}
	})
}

func TestMarshalIsValidJSONAndRoundTrips(t *testing.T) {
	codec := NewJSONCodec(wireRegistry())
	for _, s := range []string{"", "plain", "quote\"back\\slash", "<html>&", "tab\tnl\n", "é✓", "\u2028", "\x00", string([]byte{0xff, 0xfe})} {
		env := NewEnvelope(wirePayload{Name: s})
		env.AggregateType, env.AggregateID = s, s
		b, err := codec.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) {
			t.Fatalf("Marshal(%q) is not valid JSON: %s", s, b)
		}
		got, err := codec.Unmarshal(b)
		want, _ := oracleUnmarshal(codec.Registry, b)
		if err != nil || got.AggregateID != want.AggregateID || got.AggregateType != want.AggregateType || got.ID != env.ID {
			t.Errorf("round trip of %q: %+v, %v; encoding/json reads %q", s, got, err, want.AggregateID)
		}
	}
}
