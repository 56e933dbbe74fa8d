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
// as the codec once did: the hand-written reader must agree with it.
func oracleUnmarshal(r *Registry, b []byte) (Envelope, error) {
	var w struct {
		ID            string          `json:"id"`
		Type          string          `json:"type"`
		AggregateType string          `json:"aggregate_type"`
		AggregateID   string          `json:"aggregate_id"`
		Version       int64           `json:"version"`
		Position      int64           `json:"position"`
		SchemaVersion int64           `json:"schema_version"`
		OccurredAt    time.Time       `json:"occurred_at"`
		Metadata      *Metadata       `json:"metadata"`
		Data          json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return Envelope{}, err
	}
	if w.Type == "" {
		return Envelope{}, errors.New("no type")
	}
	id, err := uuid.Parse(w.ID)
	if err != nil {
		return Envelope{}, err
	}
	if len(bytes.TrimSpace(w.Data)) == 0 {
		return Envelope{}, errors.New("no data")
	}
	e, name, err := r.DecodeVersion(w.Type, int(min(w.SchemaVersion, 1<<31-1)), w.Data)
	if err != nil {
		return Envelope{}, err
	}
	env := Envelope{ID: id, Type: name, AggregateType: w.AggregateType, AggregateID: w.AggregateID,
		Version: w.Version, Position: w.Position, OccurredAt: w.OccurredAt, Event: e}
	if w.Metadata != nil {
		env.Metadata = *w.Metadata
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

func FuzzWireReaderMatchesEncodingJSON(f *testing.F) {
	codec := NewJSONCodec(wireRegistry())
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
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gotErr := codec.Unmarshal(b)
		want, wantErr := oracleUnmarshal(codec.Registry, b)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("input %q: reader error %v, encoding/json error %v", b, gotErr, wantErr)
		}
		if gotErr != nil {
			if !errors.Is(gotErr, ErrMalformed) && !errors.Is(gotErr, ErrUnknownEventType) && !errors.Is(gotErr, ErrUnknownSchemaVersion) {
				t.Fatalf("input %q: untyped error %v", b, gotErr)
			}
			return
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
