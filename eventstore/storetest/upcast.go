package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
)

// Schema evolution: the suite's event whose payload changed shape twice
// and whose type was renamed on the way.
//
//	version 1, named "storetest.PriceSet": {"price": 12.5}       (dollars)
//	version 2:                             {"price_cents": 1250}
//	version 3 (current):                   {"cents": 1250, "currency": "USD"}
//
// Version 1 becomes 2 through a raw upcaster, 2 becomes 3 through a typed
// one, so the chain exercises both.

// Repriced is the current shape, at schema version 3.
type Repriced struct {
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
}

// EventType implements eventsource.Event.
func (Repriced) EventType() string { return RepricedType }

// SchemaVersion implements eventsource.SchemaVersioned.
func (Repriced) SchemaVersion() int { return 3 }

const (
	// RepricedType is Repriced's current type name.
	RepricedType = "storetest.Repriced"
	// PriceSetType is the name Repriced was stored under at version 1.
	PriceSetType = "storetest.PriceSet"
)

// repricedV2 is version 2's shape, kept here only for the typed step.
type repricedV2 struct {
	PriceCents int64 `json:"price_cents"`
}

// RegisterUpcasting adds Repriced, its former name and both upcasters to
// r (RegisterEvents does too). A registry that has Repriced already is
// left as it is, so that registering twice is harmless.
func RegisterUpcasting(r *eventsource.Registry) error {
	return registerUpcasting(r, true)
}

func registerUpcasting(r *eventsource.Registry, firstStep bool) error {
	if r.Has(RepricedType) {
		return nil
	}
	if err := eventsource.Register[Repriced](r); err != nil {
		return err
	}
	if err := r.RegisterRename(PriceSetType, RepricedType); err != nil {
		return err
	}
	if firstStep {
		if err := r.RegisterUpcaster(RepricedType, 1, priceToCents); err != nil {
			return err
		}
	}
	return r.RegisterUpcaster(RepricedType, 2, eventsource.TypedUpcaster(func(v repricedV2) (Repriced, error) {
		return Repriced{Cents: v.PriceCents, Currency: "USD"}, nil
	}))
}

// priceToCents is the raw step from version 1 to 2: dollars as a JSON
// number become whole cents, under a new key.
func priceToCents(data []byte) ([]byte, error) {
	var v1 map[string]json.RawMessage
	if err := json.Unmarshal(data, &v1); err != nil {
		return nil, err
	}
	var dollars float64
	if err := json.Unmarshal(v1["price"], &dollars); err != nil {
		return nil, fmt.Errorf("price: %w", err)
	}
	delete(v1, "price")
	cents, _ := json.Marshal(int64(dollars*100 + 0.5))
	v1["price_cents"] = cents
	return json.Marshal(v1)
}

// RawEvent is a row as an older release, or a service in another
// language, wrote it: the payload is JSON of whatever shape it had then.
type RawEvent struct {
	StreamID      string
	Version       int64
	ID            uuid.UUID
	Type          string
	AggregateType string
	AggregateID   string
	OccurredAt    time.Time
	// SchemaVersion 0 leaves the column to its default, as a row written
	// before the column existed.
	SchemaVersion int
	Data          string
}

// UpcastOptions adapts RunUpcasting to one store.
type UpcastOptions struct {
	// Open returns a store that decodes with reg, in a database no other
	// subtest writes to; it closes what it opens with t.Cleanup.
	Open func(t *testing.T, reg *eventsource.Registry) eventstore.Store
	// InsertRaw writes rows straight into the store's table, at the next
	// global positions, bypassing Append. Nil for a store that keeps Go
	// values rather than bytes (the memory store): it has no old rows, and
	// the cases that need them are skipped.
	InsertRaw func(t *testing.T, s eventstore.Store, rows []RawEvent)
	// StoredSchemaVersion returns the schema version kept with the event
	// at position; nil skips that check.
	StoredSchemaVersion func(t *testing.T, s eventstore.Store, position int64) int
}

// RunUpcasting holds a store to schema evolution: an event is stored with
// its schema version; old rows, at any older version or under a former
// type name, Load and ReadAll (after a snapshot too) as the current
// struct; a version the code does not know, or cannot reach, is an error
// matching eventsource.ErrUnknownSchemaVersion, never a zero value.
func RunUpcasting(t *testing.T, opts UpcastOptions) {
	tests := []struct {
		name string
		raw  bool
		fn   func(t *testing.T, opts UpcastOptions)
	}{
		{"StoresSchemaVersion", false, testStoresSchemaVersion},
		{"OldRowsUpcast", true, testOldRowsUpcast},
		{"TooNewVersion", true, testTooNewVersion},
		{"NoChain", true, testNoChain},
		{"UpcasterFails", true, testUpcasterFails},
		{"SnapshotThenOldTail", true, testSnapshotThenOldTail},
		{"OldRowsReadRaw", true, testOldRowsReadRaw},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.raw && opts.InsertRaw == nil {
				t.Skip("the store keeps Go values: there are no old rows to read")
			}
			tc.fn(t, opts)
		})
	}
}

// UpcastRegistry returns a registry with the suite's types, Repriced's
// evolution included.
func UpcastRegistry() *eventsource.Registry { return NewRegistry() }

func rawRows(streamID, aggregateID string, rows ...RawEvent) []RawEvent {
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for i := range rows {
		rows[i].StreamID, rows[i].AggregateID, rows[i].AggregateType = streamID, aggregateID, "storetest"
		rows[i].Version = int64(i + 1)
		rows[i].ID = uuid.Must(uuid.NewV7())
		rows[i].OccurredAt = at.Add(time.Duration(i) * time.Second)
		if rows[i].Type == "" {
			rows[i].Type = RepricedType
		}
	}
	return rows
}

func testStoresSchemaVersion(t *testing.T, opts UpcastOptions) {
	s := opts.Open(t, UpcastRegistry())
	stored := testSchemaVersionRoundTrip(t, s)
	if opts.StoredSchemaVersion != nil {
		if v := opts.StoredSchemaVersion(t, s, stored[0].Position); v != 3 {
			t.Errorf("Repriced stored at schema version %d, want 3", v)
		}
		if v := opts.StoredSchemaVersion(t, s, stored[1].Position); v != 1 {
			t.Errorf("Deposited (no SchemaVersion) stored at schema version %d, want 1", v)
		}
	}
}

// testSchemaVersionRoundTrip (in Run too): an event at schema version 3
// reads back as it was appended, not upcast again.
func testSchemaVersionRoundTrip(t *testing.T, s eventstore.Store) []eventsource.Envelope {
	ctx := testContext(t)
	streamID, id := newStream()
	events := []eventsource.Envelope{
		eventsource.NewEnvelope(Repriced{Cents: 1250, Currency: "EUR"}),
		eventsource.NewEnvelope(Deposited{Amount: 1}),
	}
	for i := range events {
		events[i].AggregateType, events[i].AggregateID = "storetest", id
	}
	stored := mustAppend(t, ctx, s, streamID, eventstore.NoStream, events)
	loaded := load(t, ctx, s, streamID, 1)
	if len(loaded) != len(stored) {
		t.Fatalf("Load yielded %d events, want %d", len(loaded), len(stored))
	}
	for i, env := range loaded {
		sameStored(t, "Load", env, stored[i])
	}
	for i, env := range readOwn(t, ctx, s, stored[0].Position, idSet(stored)) {
		sameStored(t, "ReadAll", env, stored[i])
	}
	return stored
}

func testOldRowsUpcast(t *testing.T, opts UpcastOptions) {
	ctx := testContext(t)
	s := opts.Open(t, UpcastRegistry())
	streamID, id := newStream()
	rows := rawRows(streamID, id,
		RawEvent{Type: PriceSetType, Data: `{"price":12.5}`},                   // before versions and the rename
		RawEvent{Type: PriceSetType, SchemaVersion: 1, Data: `{"price":0.99}`}, // former name, explicit version
		RawEvent{SchemaVersion: 1, Data: `{"price":3}`},
		RawEvent{SchemaVersion: 2, Data: `{"price_cents":300,"note":"kept by the raw step"}`},
		RawEvent{SchemaVersion: 3, Data: `{"cents":5,"currency":"GBP"}`},
	)
	opts.InsertRaw(t, s, rows)
	want := []Repriced{{1250, "USD"}, {99, "USD"}, {300, "USD"}, {300, "USD"}, {5, "GBP"}}

	check := func(what string, got []eventsource.Envelope, from int) {
		t.Helper()
		if len(got) != len(want)-from {
			t.Fatalf("%s yielded %d events, want %d", what, len(got), len(want)-from)
		}
		for i, env := range got {
			row := rows[from+i]
			if env.Type != RepricedType || env.ID != row.ID || env.Version != row.Version || env.AggregateID != id {
				t.Errorf("%s event %d: type %q ID %v version %d; want %q %v %d", what, i, env.Type, env.ID, env.Version,
					RepricedType, row.ID, row.Version)
			}
			if !reflect.DeepEqual(env.Event, want[from+i]) {
				t.Errorf("%s event %d (written at version %d as %s) = %#v, want %#v", what, i, row.SchemaVersion,
					row.Data, env.Event, want[from+i])
			}
		}
	}
	check("Load", load(t, ctx, s, streamID, 1), 0)
	check("Load from version 3", load(t, ctx, s, streamID, 3), 2)
	all := load(t, ctx, s, streamID, 1)
	var own []eventsource.Envelope
	for _, env := range readOwn(t, ctx, s, all[0].Position, idSet(all)) {
		own = append(own, env)
	}
	check("ReadAll", own, 0)
}

// wantVersionError reads streamID and expects the good events, then one
// error matching kind, and nothing after it.
func wantVersionError(t *testing.T, events seq, good int, kind error) {
	t.Helper()
	n := 0
	for env, err := range events {
		if err == nil {
			if env.Event == nil {
				t.Fatalf("event %d yielded without an error and without a payload", n)
			}
			n++
			continue
		}
		if n != good {
			t.Errorf("error after %d events, want %d", n, good)
		}
		var de *eventsource.DecodeError
		if !errors.Is(err, kind) || !errors.As(err, &de) || de.Type != RepricedType {
			t.Fatalf("error %v; want a *DecodeError for %q matching %v", err, RepricedType, kind)
		}
		if env.Event != nil {
			t.Errorf("the error came with a payload %#v", env.Event)
		}
		return
	}
	t.Fatalf("%d events and no error; want %v after %d", n, kind, good)
}

func testTooNewVersion(t *testing.T, opts UpcastOptions) {
	ctx := testContext(t)
	s := opts.Open(t, UpcastRegistry())
	streamID, id := newStream()
	rows := rawRows(streamID, id,
		RawEvent{SchemaVersion: 3, Data: `{"cents":1,"currency":"USD"}`},
		RawEvent{SchemaVersion: 4, Data: `{"amount":{"units":1,"currency":"USD"}}`}, // a newer release's shape
	)
	opts.InsertRaw(t, s, rows)
	wantVersionError(t, s.Load(ctx, streamID, 1), 1, eventsource.ErrUnknownSchemaVersion)
	var from int64
	for env, err := range s.Load(ctx, streamID, 1) {
		if err != nil {
			t.Fatal(err)
		}
		from = env.Position
		break
	}
	wantVersionError(t, readFromOwn(ctx, s, from, rows), 1, eventsource.ErrUnknownSchemaVersion)
}

func testNoChain(t *testing.T, opts UpcastOptions) {
	ctx := testContext(t)
	reg := eventsource.NewRegistry()
	if err := registerUpcasting(reg, false); err != nil {
		t.Fatal(err)
	}
	s := opts.Open(t, reg)
	streamID, id := newStream()
	opts.InsertRaw(t, s, rawRows(streamID, id,
		RawEvent{SchemaVersion: 2, Data: `{"price_cents":7}`}, // reachable: 2 to 3
		RawEvent{SchemaVersion: 1, Data: `{"price":7}`},       // no step from 1
	))
	wantVersionError(t, s.Load(ctx, streamID, 1), 1, eventsource.ErrUnknownSchemaVersion)
}

func testUpcasterFails(t *testing.T, opts UpcastOptions) {
	ctx := testContext(t)
	s := opts.Open(t, UpcastRegistry())
	streamID, id := newStream()
	opts.InsertRaw(t, s, rawRows(streamID, id, RawEvent{Data: `{"price":"twelve"}`}))
	wantVersionError(t, s.Load(ctx, streamID, 1), 0, eventsource.ErrMalformed)
}

// An aggregate loaded from a snapshot reads only the events after it: they
// are upcast like any other.
func testSnapshotThenOldTail(t *testing.T, opts UpcastOptions) {
	ctx := testContext(t)
	s := opts.Open(t, UpcastRegistry())
	snaps, ok := s.(eventstore.SnapshotStore)
	if !ok {
		t.Skip("not a SnapshotStore")
	}
	streamID, id := newStream()
	opts.InsertRaw(t, s, rawRows(streamID, id,
		RawEvent{Data: `{"price":1}`},
		RawEvent{Data: `{"price":2}`},
		RawEvent{SchemaVersion: 2, Data: `{"price_cents":300}`},
	))
	if err := snaps.SaveSnapshot(ctx, eventstore.Snapshot{StreamID: streamID, AggregateType: "storetest", AggregateID: id,
		Version: 1, SchemaVersion: 1, Data: []byte(`{"total":100}`), TakenAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	snap, err := snaps.LoadSnapshot(ctx, streamID)
	if err != nil {
		t.Fatal(err)
	}
	tail := load(t, ctx, s, streamID, snap.Version+1)
	if len(tail) != 2 || !reflect.DeepEqual(tail[0].Event, Repriced{200, "USD"}) || !reflect.DeepEqual(tail[1].Event, Repriced{300, "USD"}) {
		t.Fatalf("events after the snapshot = %+v; want 200 and 300 cents, USD", tail)
	}
}

// readFromOwn yields ReadAll from position from, keeping only rows' events
// and the first error: other subtests may share the database.
func readFromOwn(ctx context.Context, s eventstore.Store, from int64, rows []RawEvent) seq {
	ids := make(map[uuid.UUID]bool, len(rows))
	for _, r := range rows {
		ids[r.ID] = true
	}
	return func(yield func(eventsource.Envelope, error) bool) {
		for env, err := range s.ReadAll(ctx, from) {
			if err != nil {
				yield(env, err)
				return
			}
			if ids[env.ID] && !yield(env, nil) {
				return
			}
		}
	}
}
