package eventsource_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
)

// referenceWire is the wire format as encoding/json writes it from a
// struct: what JSONCodec.Marshal's hand-written encoder must equal byte
// for byte.
type referenceWire struct {
	ID            string                `json:"id"`
	Type          string                `json:"type"`
	SchemaVersion int                   `json:"schema_version,omitempty"`
	AggregateType string                `json:"aggregate_type"`
	AggregateID   string                `json:"aggregate_id"`
	Version       int64                 `json:"version"`
	Position      int64                 `json:"position,omitempty"`
	OccurredAt    string                `json:"occurred_at"`
	Metadata      *eventsource.Metadata `json:"metadata,omitempty"`
	Data          json.RawMessage       `json:"data"`
}

func referenceMarshal(t *testing.T, env eventsource.Envelope) []byte {
	t.Helper()
	data, err := json.Marshal(env.Event)
	if err != nil {
		t.Fatal(err)
	}
	w := referenceWire{
		ID: env.ID.String(), Type: env.Type, AggregateType: env.AggregateType, AggregateID: env.AggregateID,
		Version: env.Version, Position: env.Position, OccurredAt: env.OccurredAt.Format(time.RFC3339Nano), Data: data,
	}
	if w.Type == "" {
		w.Type = env.Event.EventType()
	}
	if v := eventsource.SchemaVersionOf(env.Event); v > 1 {
		w.SchemaVersion = v
	}
	if !env.Metadata.IsZero() {
		w.Metadata = &env.Metadata
	}
	out, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// indentedEvent encodes itself with white space, which encoding/json
// compacts.
type indentedEvent struct{ N int }

func (indentedEvent) EventType() string { return "Indented" }
func (e indentedEvent) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("{\n  \"n\" : %d\n}", e.N)), nil
}

// awkward strings: escapes, HTML characters, control characters, invalid
// UTF-8, non-ASCII, U+2028/2029, DEL.
var awkward = []string{
	"", "plain", `quote"d`, `back\slash`, "<tag>&amp;", "tab\tnew\nline\r", "\x00\x01\x1f", "\x7f",
	"héllo wörld", "日本語", "emoji 🎉", "\u2028\u2029", "bad \xff\xfe utf8", "trailing \xe2\x82",
}

func TestMarshalBytesMatchEncodingJSON(t *testing.T) {
	codec := eventsource.NewJSONCodec(nil)
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string {
		if rng.IntN(3) == 0 {
			return ""
		}
		return awkward[rng.IntN(len(awkward))] + awkward[rng.IntN(len(awkward))]
	}
	times := []time.Time{
		{}, time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC), time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC),
		time.Date(2024, 1, 2, 3, 4, 5, 120000000, time.FixedZone("x", -(5*3600+30*60))),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	}
	events := []eventsource.Event{
		Deposited{Account: "acc-1", Cents: 42}, &Withdrawn{Cents: -7}, Price{Cents: 1999, Currency: "€"},
		indentedEvent{N: 3}, Deposited{Account: "<script>\u2028\"x\"", Cents: 0},
	}
	var envs []eventsource.Envelope
	for i := range 2000 {
		env := eventsource.Envelope{
			AggregateType: pick(),
			AggregateID:   pick(),
			Version:       []int64{0, 1, 7, -3, 1 << 62}[rng.IntN(5)],
			Position:      []int64{0, 0, 1, 123456789012}[rng.IntN(4)],
			OccurredAt:    times[rng.IntN(len(times))],
			Event:         events[rng.IntN(len(events))],
		}
		for j := range env.ID {
			env.ID[j] = byte(rng.Uint32())
		}
		if rng.IntN(2) == 0 {
			env.Type = pick()
		}
		if i%2 == 1 {
			env.Metadata = eventsource.Metadata{
				CorrelationID: pick(), CausationID: pick(), TenantID: pick(), TraceParent: pick(), TraceState: pick(),
			}
			switch rng.IntN(4) {
			case 0:
				env.Metadata.Extra = map[string]string{}
			case 1:
				env.Metadata.Extra = map[string]string{pick(): pick(), pick(): pick(), "b": "", "a": pick(), "A": "x"}
			}
		}
		envs = append(envs, env)
	}
	for i, env := range envs {
		got, err := codec.Marshal(env)
		if err != nil {
			t.Fatalf("envelope %d: %v", i, err)
		}
		if want := referenceMarshal(t, env); !bytes.Equal(got, want) {
			t.Fatalf("envelope %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

func TestMarshalErrors(t *testing.T) {
	codec := eventsource.NewJSONCodec(nil)
	if _, err := codec.Marshal(eventsource.Envelope{}); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("nil event: %v", err)
	}
	_, err := codec.Marshal(eventsource.NewEnvelope(unencodable{C: make(chan int)}))
	if !errors.Is(err, eventsource.ErrInvalidEvent) || !strings.Contains(err.Error(), "Unencodable") {
		t.Errorf("unencodable payload: %v", err)
	}
	// A failed encode leaves nothing behind for the next one.
	good := eventsource.NewEnvelope(Deposited{Account: "a", Cents: 1})
	got, err := codec.Marshal(good)
	if err != nil || !bytes.Equal(got, referenceMarshal(t, good)) {
		t.Errorf("after a failure: %s, %v", got, err)
	}
}

type unencodable struct{ C chan int }

func (unencodable) EventType() string { return "Unencodable" }
