package eventsource

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const dupID = `"id":"01890a5d-ac96-774b-bcce-b302099a8057"`

// A repeated key is decoded as encoding/json decodes it into the
// envelope's struct: a later null leaves the field as it was, and a
// repeated "metadata" object is merged into the one before it (a null
// between them resets it, as it does the *Metadata pointer).
func TestWireDuplicateKeysAsEncodingJSON(t *testing.T) {
	codec := NewJSONCodec(wireRegistry())
	for _, s := range []string{
		`{` + dupID + `,"type":"WirePayload","type":null,"data":{}}`,
		`{` + dupID + `,"type":"WirePayload","id":null,"data":{}}`,
		`{` + dupID + `,"type":"WirePayload","aggregate_type":"A","aggregate_type":null,"data":{}}`,
		`{` + dupID + `,"type":"WirePayload","aggregate_id":"x","aggregate_id":null,"data":{}}`,
		`{` + dupID + `,"type":"WirePayload","version":5,"version":null,"data":{}}`,
		`{` + dupID + `,"type":"WirePayload","position":5,"POSITION":null,"data":{}}`,
		`{` + dupID + `,"type":"WirePayload","occurred_at":"2026-01-02T03:04:05Z","occurred_at":null,"data":{}}`,
		`{` + dupID + `,"type":"WirePayload","metadata":{"correlation_id":"x"},"metadata":{"tenant_id":"y"},"data":{}}`,
		`{` + dupID + `,"type":"WirePayload","metadata":{"extra":{"a":"1"}},"Metadata":{"extra":{"b":"2"}},"data":{}}`,
		`{` + dupID + `,"type":"WirePayload","metadata":{"correlation_id":"x"},"metadata":null,"metadata":{"tenant_id":"y"},"data":{}}`,
		`{` + dupID + `,"type":"WirePayload","metadata":{"correlation_id":"x"},"metadata":null,"data":{}}`,
		// An earlier value that does not decode fails the envelope even
		// when a later one would.
		`{` + dupID + `,"type":"WirePayload","occurred_at":"yesterday","occurred_at":"2026-01-02T03:04:05Z","data":{}}`,
		`{` + dupID + `,"type":"WirePayload","metadata":{"tenant_id":5},"metadata":{},"data":{}}`,
		`{` + dupID + `,"type":"WirePayload","metadata":7,"metadata":null,"data":{}}`,
	} {
		got, gotErr := codec.Unmarshal([]byte(s))
		want, wantErr := oracleUnmarshal(codec.Registry, []byte(s))
		if (gotErr == nil) != (wantErr == nil) {
			t.Errorf("%s:\n reader error %v, encoding/json error %v", s, gotErr, wantErr)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n reader %+v\n  json  %+v", s, got, want)
		}
	}
}

// A schema version repeated with null must not make the codec run a
// current payload through an upcaster meant for an older shape.
func TestWireNullSchemaVersionKeepsTheEarlierOne(t *testing.T) {
	r := wireRegistry()
	MustRegister[wireVersioned](r)
	r.MustRegisterUpcaster("WireVersioned", 1, func([]byte) ([]byte, error) { return []byte(`{"name":"from v1"}`), nil })
	env, err := NewJSONCodec(r).Unmarshal([]byte(`{` + dupID + `,"type":"WireVersioned","schema_version":2,"schema_version":null,"data":{"name":"v2"}}`))
	if err != nil || env.Event.(wireVersioned).Name != "v2" {
		t.Fatalf("Unmarshal = %+v, %v; want the v2 payload as written", env.Event, err)
	}
}

type wireVersioned struct {
	Name string `json:"name"`
}

func (wireVersioned) EventType() string  { return "WireVersioned" }
func (wireVersioned) SchemaVersion() int { return 2 }

// Invalid JSON inside "data", "metadata" or "occurred_at" makes the
// envelope malformed, whatever its type, before anything (an upcaster,
// EnvelopeType's caller) is handed the bytes.
func TestWireValuesAreValidJSON(t *testing.T) {
	r := wireRegistry()
	MustRegister[wireVersioned](r)
	var upcast [][]byte
	r.MustRegisterUpcaster("WireVersioned", 1, func(b []byte) ([]byte, error) {
		upcast = append(upcast, b)
		return []byte(`{"name":"dropped every v1 field"}`), nil
	})
	codec := NewJSONCodec(r)
	for _, v := range []string{`[}`, `{"a" 1}`, `{"a":1,}`, `[1 2]`, `tru`, `nul`, `1.`, `-`, `01`, `1e`, `"\x"`, `{"a":[}]}`, `{1:2}`} {
		for _, typ := range []string{"WireVersioned", "Unregistered"} {
			for _, s := range []string{
				`{` + dupID + `,"type":"` + typ + `","data":` + v + `}`,
				`{` + dupID + `,"type":"` + typ + `","metadata":{"x":` + v + `},"data":{}}`,
				`{` + dupID + `,"type":"` + typ + `","occurred_at":` + v + `,"data":{}}`,
				`{` + dupID + `,"type":"` + typ + `","unknown":` + v + `,"data":{}}`,
			} {
				if _, err := codec.Unmarshal([]byte(s)); !errors.Is(err, ErrMalformed) {
					t.Errorf("Unmarshal(%s) = %v, want ErrMalformed", s, err)
				}
				if _, err := EnvelopeType([]byte(s)); !errors.Is(err, ErrMalformed) {
					t.Errorf("EnvelopeType(%s) = %v, want ErrMalformed", s, err)
				}
			}
		}
	}
	if len(upcast) > 0 {
		t.Errorf("the upcaster was handed invalid JSON: %q", upcast)
	}
}

// encoding/json refuses nesting deeper than 10000, counting from the
// envelope's own brace; so does the reader, wherever the nesting is.
func TestWireNestingLimit(t *testing.T) {
	codec := NewJSONCodec(wireRegistry())
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, n := range []int{9998, 9999, 10000} {
		for _, s := range []string{
			`{` + dupID + `,"type":"WirePayload","data":{"tags":null,"x":` + nest(n-1) + `}}`,
			`{` + dupID + `,"type":"WirePayload","metadata":{"x":` + nest(n-1) + `},"data":{}}`,
			`{` + dupID + `,"type":"WirePayload","x":` + nest(n) + `,"data":{}}`,
		} {
			_, gotErr := codec.Unmarshal([]byte(s))
			_, wantErr := oracleUnmarshal(codec.Registry, []byte(s))
			if (gotErr == nil) != (wantErr == nil) {
				t.Errorf("depth %d, %.60s...: reader error %v, encoding/json error %v", n, s, gotErr, wantErr)
			}
		}
	}
}
