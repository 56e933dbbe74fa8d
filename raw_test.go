package eventsource_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
)

// rawOf is what a store's raw read hands on for e.
func rawOf(t *testing.T, e eventsource.Event) eventsource.RawEvent {
	t.Helper()
	data, err := eventsource.MarshalEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return eventsource.RawEvent{Name: e.EventType(), Schema: eventsource.SchemaVersionOf(e), JSON: data}
}

func rawTestEnvelope(e eventsource.Event) eventsource.Envelope {
	return eventsource.Envelope{
		ID: uuid.MustParse(wireID), AggregateType: "Item", AggregateID: "1", Version: 3, Position: 42,
		OccurredAt: time.Date(2026, 11, 30, 6, 0, 0, 123456789, time.UTC),
		Metadata:   eventsource.Metadata{CorrelationID: "c-1", Extra: map[string]string{"k": "v"}},
		Event:      e,
	}
}

// A RawEvent is encoded as the event it was read from: same bytes, so a
// consumer cannot tell a relay that passes payloads through from one that
// decodes and encodes them again.
func TestMarshalRawEventIsTheEventsBytes(t *testing.T) {
	codec := eventsource.NewJSONCodec(priceRegistry(t))
	for _, e := range []eventsource.Event{
		Price{Cents: 1250, Currency: "EUR <&>"}, // schema version 3, characters encoding/json escapes
		plain{},                                 // version 1: no schema_version field
	} {
		want, err := codec.Marshal(rawTestEnvelope(e))
		if err != nil {
			t.Fatal(err)
		}
		raw := rawOf(t, e)
		got, err := codec.Marshal(rawTestEnvelope(raw))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%T as a RawEvent encodes as\n\t%s\nwant\n\t%s", e, got, want)
		}
		if data, err := eventsource.MarshalEvent(raw); err != nil || !bytes.Equal(data, raw.JSON) {
			t.Errorf("MarshalEvent(RawEvent) = %s, %v; want the payload as it is", data, err)
		}
	}
	back, err := codec.Unmarshal(mustMarshal(t, codec, rawTestEnvelope(rawOf(t, Price{Cents: 99, Currency: "USD"}))))
	if err != nil {
		t.Fatal(err)
	}
	if back.Event != (Price{Cents: 99, Currency: "USD"}) || back.Type != "PriceChanged" || back.Metadata.Extra["k"] != "v" {
		t.Errorf("decoded %+v", back)
	}
}

// A RawEvent keeps the version and name it was stored under: the
// consumer upcasts it and reads the former name as the current one.
func TestMarshalRawEventOfAnOldVersionIsUpcastByTheConsumer(t *testing.T) {
	codec := eventsource.NewJSONCodec(priceRegistry(t))
	for _, raw := range []eventsource.RawEvent{
		{Name: "PriceSet", Schema: 1, JSON: []byte(`{"price":12.5}`)},
		{Name: "PriceSet", Schema: 0, JSON: []byte(`{"price":12.5}`)}, // 0 is version 1
		{Name: "PriceChanged", Schema: 2, JSON: []byte(`{"price_cents":1250}`)},
	} {
		b := mustMarshal(t, codec, rawTestEnvelope(raw))
		env, err := codec.Unmarshal(b)
		if err != nil {
			t.Fatalf("%+v: %v", raw, err)
		}
		want := Price{Cents: 1250, Currency: "USD"}
		if !reflect.DeepEqual(env.Event, want) || env.Type != "PriceChanged" {
			t.Errorf("%s decoded as %s %#v, want PriceChanged %#v", b, env.Type, env.Event, want)
		}
	}
}

func TestMarshalRawEventWithoutPayload(t *testing.T) {
	codec := eventsource.NewJSONCodec(priceRegistry(t))
	raw := eventsource.RawEvent{Name: "PriceChanged", Schema: 3}
	if _, err := codec.Marshal(rawTestEnvelope(raw)); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("Marshal of a RawEvent without a payload: %v, want ErrInvalidEvent", err)
	}
	if _, err := eventsource.MarshalEvent(raw); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("MarshalEvent of a RawEvent without a payload: %v, want ErrInvalidEvent", err)
	}
}

func mustMarshal(t *testing.T, c eventsource.Codec, env eventsource.Envelope) []byte {
	t.Helper()
	b, err := c.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A RawEvent is encoded as the event it holds the bytes of, and decodes
// into the registered type.
func ExampleRawEvent() {
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[Deposited](reg)
	codec := eventsource.NewJSONCodec(reg)
	raw := eventsource.RawEvent{Name: "Deposited", JSON: []byte(`{"account":"a-1","cents":500}`)}
	b, err := codec.Marshal(eventsource.Envelope{ID: uuid.MustParse(wireID), AggregateType: "Account", AggregateID: "a-1",
		Version: 1, OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Event: raw})
	if err != nil {
		panic(err)
	}
	env, err := codec.Unmarshal(b)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s\n%#v\n", b, env.Event)
	// Output:
	// {"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"Deposited","aggregate_type":"Account","aggregate_id":"a-1","version":1,"occurred_at":"2026-01-02T03:04:05Z","data":{"account":"a-1","cents":500}}
	// eventsource_test.Deposited{Account:"a-1", Cents:500}
}
