package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
)

// testReadAllRaw: a store that implements eventstore.RawReader yields
// from ReadAllRaw what ReadAll yields, with each payload as a
// RawEvent whose bytes decode with the registry to ReadAll's event.
func testReadAllRaw(t *testing.T, s eventstore.Store) {
	rr, ok := s.(eventstore.RawReader)
	if !ok {
		t.Skip("not an eventstore.RawReader")
	}
	ctx := testContext(t)
	streamID, id := newStream()
	events := append(deposits(id, 1, 2),
		eventsource.NewEnvelope(Repriced{Cents: 1250, Currency: "EUR <&>"}), // schema version 3
		eventsource.NewEnvelope(Deposited{Amount: 3}))
	for i := range events {
		events[i].AggregateType, events[i].AggregateID = "storetest", id
	}
	events[1].Metadata = eventsource.Metadata{CorrelationID: "c", TenantID: "t", Extra: map[string]string{"k": "v"}}
	stored := mustAppend(t, ctx, s, streamID, eventstore.NoStream, events)
	ids := idSet(stored)

	decoded := readOwn(t, ctx, s, stored[0].Position, ids)
	raw := readOwnRaw(t, ctx, rr, stored[0].Position, ids)
	if len(raw) != len(decoded) || len(raw) != len(stored) {
		t.Fatalf("ReadAllRaw yielded %d of the events, ReadAll %d; want %d", len(raw), len(decoded), len(stored))
	}
	reg := NewRegistry()
	for i, env := range raw {
		want := decoded[i]
		re := wantRaw(t, env)
		if re.Name != env.Type || eventsource.SchemaVersionOf(re) != eventsource.SchemaVersionOf(want.Event) {
			t.Errorf("event %d: RawEvent %q at version %d in an envelope of type %q; want %q at version %d",
				i, re.Name, re.Schema, env.Type, want.Type, eventsource.SchemaVersionOf(want.Event))
		}
		e, typ, err := reg.DecodeVersion(re.Name, re.Schema, re.JSON)
		if err != nil {
			t.Fatalf("event %d: payload %s does not decode: %v", i, re.JSON, err)
		}
		env.Event, env.Type = e, typ
		sameStored(t, "ReadAllRaw, decoded", env, want)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	var errs []error
	for env, err := range rr.ReadAllRaw(cancelled, stored[0].Position) {
		if err == nil {
			t.Fatalf("ReadAllRaw with a cancelled context yielded position %d", env.Position)
		}
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
		t.Fatalf("ReadAllRaw with a cancelled context: errors %v; want one context.Canceled", errs)
	}
}

// testOldRowsReadRaw: ReadAllRaw hands old rows on as they were written,
// under their former type name and version, neither upcast nor checked:
// whoever decodes them upcasts them as Load would.
func testOldRowsReadRaw(t *testing.T, opts UpcastOptions) {
	ctx := testContext(t)
	reg := UpcastRegistry()
	s := opts.Open(t, reg)
	rr, ok := s.(eventstore.RawReader)
	if !ok {
		t.Skip("not an eventstore.RawReader")
	}
	streamID, id := newStream()
	rows := rawRows(streamID, id,
		RawEvent{Type: PriceSetType, Data: `{"price":12.5}`},
		RawEvent{SchemaVersion: 2, Data: `{"price_cents":300}`},
		RawEvent{SchemaVersion: 3, Data: `{"cents":5,"currency":"GBP"}`},
		RawEvent{SchemaVersion: 4, Data: `{"units":1}`}, // a newer release's: ReadAll fails on it, ReadAllRaw does not
	)
	opts.InsertRaw(t, s, rows)
	want := []Repriced{{1250, "USD"}, {300, "USD"}, {5, "GBP"}}
	wantSchema := []int{1, 2, 3, 4}
	ids := make(map[uuid.UUID]bool, len(rows))
	for _, r := range rows {
		ids[r.ID] = true
	}
	var from int64
	for env, err := range s.Load(ctx, streamID, 1) { // its first row decodes; the last does not
		if err != nil {
			t.Fatal(err)
		}
		from = env.Position
		break
	}
	got := readOwnRaw(t, ctx, rr, from, ids)
	if len(got) != len(rows) {
		t.Fatalf("ReadAllRaw yielded %d of the rows, want %d", len(got), len(rows))
	}
	for i, env := range got {
		re := wantRaw(t, env)
		if env.ID != rows[i].ID || env.Type != rows[i].Type || re.Name != rows[i].Type ||
			eventsource.SchemaVersionOf(re) != wantSchema[i] {
			t.Errorf("row %d: ID %v, type %q, RawEvent %q at version %d; want %v, %q at version %d",
				i, env.ID, env.Type, re.Name, eventsource.SchemaVersionOf(re), rows[i].ID, rows[i].Type, wantSchema[i])
		}
		if i >= len(want) {
			continue
		}
		e, typ, err := reg.DecodeVersion(re.Name, re.Schema, re.JSON)
		if err != nil || typ != RepricedType || !reflect.DeepEqual(e, want[i]) {
			t.Errorf("row %d (%s) decodes as %q %#v, %v; want %q %#v", i, re.JSON, typ, e, err, RepricedType, want[i])
		}
	}
}

// readOwnRaw is readOwn over ReadAllRaw.
func readOwnRaw(t *testing.T, ctx context.Context, rr eventstore.RawReader, from int64, ids map[uuid.UUID]bool) []eventsource.Envelope {
	t.Helper()
	var own []eventsource.Envelope
	next := from
	for env, err := range rr.ReadAllRaw(ctx, from) {
		if err != nil {
			t.Fatalf("ReadAllRaw(%d) failed at position %d: %v", from, next, err)
		}
		if env.Position != next {
			t.Fatalf("ReadAllRaw(%d) yielded position %d, want %d (positions must be contiguous)", from, env.Position, next)
		}
		next++
		if ids[env.ID] {
			own = append(own, env)
		}
	}
	return own
}

func wantRaw(t *testing.T, env eventsource.Envelope) eventsource.RawEvent {
	t.Helper()
	re, ok := env.Event.(eventsource.RawEvent)
	if !ok {
		t.Fatalf("ReadAllRaw yielded a %T at position %d, want an eventsource.RawEvent", env.Event, env.Position)
	}
	return re
}
