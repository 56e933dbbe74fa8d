package eventsource_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
)

// An occurred_at that RFC 3339 cannot carry (a year past 9999 or before
// 0, an offset of a day or more) is refused at Marshal, as encoding/json
// refuses it, rather than written as bytes that every consumer then
// rejects as malformed.
func TestMarshalRefusesTimesRFC3339CannotCarry(t *testing.T) {
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[Deposited](reg)
	codec := eventsource.NewJSONCodec(reg)
	for _, at := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("far", 24*3600)),
	} {
		env := eventsource.NewEnvelope(Deposited{Account: "a", Cents: 1})
		env.OccurredAt = at
		b, err := codec.Marshal(env)
		if !errors.Is(err, eventsource.ErrInvalidEvent) {
			_, decodeErr := codec.Unmarshal(b)
			t.Errorf("Marshal(occurred_at %v) = %s, %v; want ErrInvalidEvent (the bytes decode to %v)", at, b, err, decodeErr)
		}
	}
	for _, at := range []time.Time{{}, time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -(23*3600+59*60)))} {
		env := eventsource.NewEnvelope(Deposited{Account: "a", Cents: 1})
		env.OccurredAt = at
		b, err := codec.Marshal(env)
		if err != nil {
			t.Fatalf("Marshal(occurred_at %v) = %v", at, err)
		}
		if got, err := codec.Unmarshal(b); err != nil || !got.OccurredAt.Equal(at) {
			t.Errorf("round trip of occurred_at %v = %v, %v", at, got.OccurredAt, err)
		}
	}
}

// TestDataNullIsMalformed: "data" is required and not empty (the README's
// wire rules); null is no payload either, not a zero-value event.
func TestDataNullIsMalformed(t *testing.T) {
	codec := eventsource.NewJSONCodec(newRegistry(t))
	for _, data := range []string{`null`, ` null `} {
		b := []byte(`{"id":"0190a3b8-7e2f-7c3a-9d4e-5f6a7b8c9d0e","type":"Deposited","data":` + data + `}`)
		if _, err := codec.Unmarshal(b); !errors.Is(err, eventsource.ErrMalformed) {
			t.Fatalf("data %s: %v, want ErrMalformed", data, err)
		}
	}
}

// Touchy's UnmarshalJSON panics on a payload it does not expect, as a
// user's hand-written decoder may.
type Touchy struct{ N int }

func (Touchy) EventType() string { return "Touchy" }
func (t *Touchy) UnmarshalJSON(b []byte) error {
	if string(b) != "{}" {
		panic("unexpected payload " + string(b))
	}
	return nil
}

// TestDecodePanicIsMalformed: a payload whose decoding panics is a
// malformed event, an error, on every read path (stores, consumers).
func TestDecodePanicIsMalformed(t *testing.T) {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[Touchy](r)
	if _, _, err := r.DecodeVersion("Touchy", 1, []byte(`{"n":1}`)); !errors.Is(err, eventsource.ErrMalformed) ||
		!strings.Contains(err.Error(), "unexpected payload") {
		t.Fatalf("DecodeVersion of a payload whose decoding panics = %v, want ErrMalformed naming the panic", err)
	}
	if _, _, err := r.DecodeVersion("Touchy", 1, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
}
