package main

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
)

// Rows written by the release that stored dollars are read as cents and a
// currency; a new event is stored at version 2 and reads back unchanged;
// a row from a newer release is a typed error.
func TestOldPriceEventsReadAsCents(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "orders.db")
	reg := eventsource.NewRegistry()
	registerOrderEvents(reg)
	store, err := sqlite.Open(ctx, path, sqlite.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	// What the older release wrote: no schema_version, dollars.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i, price := range []string{`19.99`, `0.1`} {
		_, err := db.ExecContext(ctx, `INSERT INTO events (position, stream_id, version, event_id, type, aggregate_type,
			aggregate_id, occurred_at, data) VALUES (?, 'Order-o-1', ?, ?, 'OrderRepriced', 'Order', 'o-1',
			'2024-01-02T03:04:05.000000000Z', ?)`, i+1, i+1, uuid.NewString(), `{"order_id":"o-1","price":`+price+`}`)
		if err != nil {
			t.Fatal(err)
		}
	}
	env := eventsource.NewEnvelope(OrderRepriced{OrderID: "o-1", Cents: 500, Currency: "EUR"})
	env.AggregateType, env.AggregateID = "Order", "o-1"
	if _, err := store.Append(ctx, "Order-o-1", 2, []eventsource.Envelope{env}); err != nil {
		t.Fatal(err)
	}

	var got []eventsource.Event
	for env, err := range store.Load(ctx, "Order-o-1", 1) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, env.Event)
	}
	want := []eventsource.Event{
		OrderRepriced{OrderID: "o-1", Cents: 1999, Currency: "USD"},
		OrderRepriced{OrderID: "o-1", Cents: 10, Currency: "USD"},
		OrderRepriced{OrderID: "o-1", Cents: 500, Currency: "EUR"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load = %+v, want %+v", got, want)
	}

	// The wire format carries the version too, so a bus reads the same.
	codec := eventsource.NewJSONCodec(reg)
	old := `{"id":"` + uuid.NewString() + `","type":"OrderRepriced","aggregate_id":"o-1","version":1,"data":{"order_id":"o-1","price":19.99}}`
	if env, err := codec.Unmarshal([]byte(old)); err != nil || env.Event != want[0] {
		t.Fatalf("codec on an old message = %+v, %v", env.Event, err)
	}
	tooNew := `{"id":"` + uuid.NewString() + `","type":"OrderRepriced","schema_version":3,"data":{}}`
	if _, err := codec.Unmarshal([]byte(tooNew)); !errors.Is(err, eventsource.ErrUnknownSchemaVersion) {
		t.Fatalf("codec on a version-3 message: %v, want ErrUnknownSchemaVersion", err)
	}
}
