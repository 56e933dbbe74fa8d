// Package storetest is the conformance suite that every eventstore.Store
// and eventstore.CheckpointStore passes:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) eventstore.Store { return newStore(t) })
//	}
//
// Stores that decode payloads must know the suite's event types: build them
// with NewRegistry, or add the types to another registry with
// RegisterEvents.
//
// The suite may run against a database that other tests share: each
// subtest writes to streams with fresh UUID-based names and never assumes it
// is the only writer. It does assume that nothing deletes events, since
// global positions are gap-free by contract.
//
// Besides the Store contract, the suite pins down what the stores in this
// module agree on: Append rejects a nil Event, or a Type that disagrees with
// Event.EventType(), with eventsource.ErrInvalidEvent, and an expected
// version below AnyVersion with a plain error; it fills a missing Type, ID
// (UUID v7) and OccurredAt; what Append returns is exactly what Load and
// ReadAll later yield; callers' envelopes and metadata maps are never
// shared with the store; an iterator whose context is cancelled yields
// the context's error next and stops; and aggregates whose type and ID
// joined with a plain dash would spell the same name get separate streams
// from eventsource.StreamID (stream IDs are opaque strings to a store).
//
// Times: a store may keep OccurredAt at microsecond precision (PostgreSQL
// does). The suite accepts a stored time equal to the appended one or to it
// truncated to the microsecond, and requires that Load and ReadAll return
// exactly the time that Append returned.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
)

// timeout bounds every subtest, so that a deadlocked store fails instead of
// hanging the run.
const timeout = 2 * time.Minute

// Run runs the Store conformance suite. newStore is called once per
// subtest; it may return a fresh store or one that subtests share, and it
// is responsible for closing what it opens (with t.Cleanup).
func Run(t *testing.T, newStore func(t *testing.T) eventstore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s eventstore.Store)
	}{
		{"AppendAssignsVersionsAndPositions", testAppendAssigns},
		{"AppendFillsDefaults", testAppendFillsDefaults},
		{"ExpectedVersion", testExpectedVersion},
		{"ConflictError", testConflictError},
		{"AtomicBatch", testAtomicBatch},
		{"InvalidEvents", testInvalidEvents},
		{"NULCharacters", testNULCharacters},
		{"EmptyAppend", testEmptyAppend},
		{"LargeBatch", testLargeBatch},
		{"Load", testLoad},
		{"AmbiguousNames", testAmbiguousNames},
		{"ReadAll", testReadAll},
		{"RoundTrip", testRoundTrip},
		{"CopiesInAndOut", testCopies},
		{"EarlyBreak", testEarlyBreak},
		{"EarlyBreakLeavesNoGoroutine", testEarlyBreakLeavesNoGoroutine},
		{"NestedReads", testNestedReads},
		{"AppendWhileIterating", testAppendWhileIterating},
		{"CancelledContext", testCancelledContext},
		{"CancelDuringIteration", testCancelDuringIteration},
		{"ConcurrentExactVersion", testConcurrentExactVersion},
		{"ConcurrentRetry", testConcurrentRetry},
		{"ReadAllWhileAppending", testReadAllWhileAppending},
		{"SchemaVersionRoundTrip", func(t *testing.T, s eventstore.Store) { testSchemaVersionRoundTrip(t, s) }},
		{"ReadAllRaw", testReadAllRaw},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// Helpers.

// seq is what Load and ReadAll return.
type seq = iter.Seq2[eventsource.Envelope, error]

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// newStream returns a stream ID no other test uses, and the aggregate ID in it.
func newStream() (streamID, aggregateID string) {
	id := uuid.NewString()
	return eventsource.StreamID("storetest", id), id
}

// deposits returns n envelopes for aggregateID with amounts first..first+n-1.
func deposits(aggregateID string, first, n int) []eventsource.Envelope {
	out := make([]eventsource.Envelope, n)
	for i := range out {
		env := eventsource.NewEnvelope(Deposited{Amount: first + i})
		env.AggregateType = "storetest"
		env.AggregateID = aggregateID
		out[i] = env
	}
	return out
}

func mustAppend(t *testing.T, ctx context.Context, s eventstore.Store, streamID string, expected int64, events []eventsource.Envelope) []eventsource.Envelope {
	t.Helper()
	got, err := s.Append(ctx, streamID, expected, events)
	if err != nil {
		t.Fatalf("Append(%q, expected %d, %d events): %v", streamID, expected, len(events), err)
	}
	if len(got) != len(events) {
		t.Fatalf("Append(%q) returned %d envelopes, want %d", streamID, len(got), len(events))
	}
	return got
}

func collect(t *testing.T, events seq) []eventsource.Envelope {
	t.Helper()
	var out []eventsource.Envelope
	for env, err := range events {
		if err != nil {
			t.Fatalf("iteration failed after %d events: %v", len(out), err)
		}
		out = append(out, env)
	}
	return out
}

func load(t *testing.T, ctx context.Context, s eventstore.Store, streamID string, from int64) []eventsource.Envelope {
	t.Helper()
	return collect(t, s.Load(ctx, streamID, from))
}

// readOwn reads everything from position from and keeps the events whose ID
// is in ids, checking on the way that positions are contiguous and that the
// first one is from.
func readOwn(t *testing.T, ctx context.Context, s eventstore.Store, from int64, ids map[uuid.UUID]bool) []eventsource.Envelope {
	t.Helper()
	var own []eventsource.Envelope
	next := from
	for env, err := range s.ReadAll(ctx, from) {
		if err != nil {
			t.Fatalf("ReadAll(%d) failed at position %d: %v", from, next, err)
		}
		if env.Position != next {
			t.Fatalf("ReadAll(%d) yielded position %d, want %d (positions must be contiguous)", from, env.Position, next)
		}
		next++
		if ids[env.ID] {
			own = append(own, env)
		}
	}
	return own
}

func idSet(envs ...[]eventsource.Envelope) map[uuid.UUID]bool {
	ids := make(map[uuid.UUID]bool)
	for _, batch := range envs {
		for _, env := range batch {
			ids[env.ID] = true
		}
	}
	return ids
}

// storedTime reports whether got is want as a store may keep it: exactly,
// or truncated to the microsecond.
func storedTime(got, want time.Time) bool {
	return got.Equal(want) || got.Equal(want.Truncate(time.Microsecond))
}

// sameStored fails unless got is the envelope that Append returned as want.
func sameStored(t *testing.T, what string, got, want eventsource.Envelope) {
	t.Helper()
	if got.ID != want.ID || got.Type != want.Type || got.AggregateType != want.AggregateType ||
		got.AggregateID != want.AggregateID || got.Version != want.Version || got.Position != want.Position {
		t.Fatalf("%s: got envelope\n\t%+v\nwant\n\t%+v", what, got, want)
	}
	if !got.OccurredAt.Equal(want.OccurredAt) {
		t.Fatalf("%s: OccurredAt = %v, want %v (what Append returned)", what, got.OccurredAt, want.OccurredAt)
	}
	if !reflect.DeepEqual(got.Metadata, want.Metadata) {
		t.Fatalf("%s: Metadata = %+v, want %+v", what, got.Metadata, want.Metadata)
	}
	if !reflect.DeepEqual(got.Event, want.Event) {
		t.Fatalf("%s: Event = %#v, want %#v", what, got.Event, want.Event)
	}
}

func wantConflict(t *testing.T, err error, streamID string, expected, actual int64) {
	t.Helper()
	if err == nil {
		t.Fatalf("append to %q at expected version %d succeeded, want a conflict (actual %d)", streamID, expected, actual)
	}
	if !errors.Is(err, eventsource.ErrConcurrencyConflict) {
		t.Fatalf("error %v does not match ErrConcurrencyConflict", err)
	}
	var ce *eventsource.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *eventsource.ConflictError", err, err)
	}
	if ce.StreamID != streamID || ce.Expected != expected || ce.Actual != actual {
		t.Fatalf("ConflictError = {StreamID:%q Expected:%d Actual:%d}, want {StreamID:%q Expected:%d Actual:%d}",
			ce.StreamID, ce.Expected, ce.Actual, streamID, expected, actual)
	}
}

func wantLen(t *testing.T, ctx context.Context, s eventstore.Store, streamID string, n int) []eventsource.Envelope {
	t.Helper()
	got := load(t, ctx, s, streamID, 1)
	if len(got) != n {
		t.Fatalf("stream %q has %d events, want %d", streamID, len(got), n)
	}
	for i, env := range got {
		if env.Version != int64(i+1) {
			t.Fatalf("stream %q: event %d has version %d, want %d", streamID, i, env.Version, i+1)
		}
	}
	return got
}

// Subtests.

func testAppendAssigns(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	in := deposits(agg, 0, 3)
	first := mustAppend(t, ctx, s, stream, eventstore.NoStream, in)
	if first[0].Position < 1 {
		t.Fatalf("first position = %d, want >= 1", first[0].Position)
	}
	for i, env := range first {
		if env.Version != int64(i+1) {
			t.Errorf("event %d: Version = %d, want %d", i, env.Version, i+1)
		}
		if env.Position != first[0].Position+int64(i) {
			t.Errorf("event %d: Position = %d, want %d (a batch's positions are contiguous)", i, env.Position, first[0].Position+int64(i))
		}
		if env.ID != in[i].ID || env.Type != "storetest.Deposited" || env.AggregateType != "storetest" || env.AggregateID != agg {
			t.Errorf("event %d: facts changed: got %+v, appended %+v", i, env, in[i])
		}
		if env.Event != (Deposited{Amount: i}) {
			t.Errorf("event %d: Event = %#v, want %#v", i, env.Event, Deposited{Amount: i})
		}
		if in[i].Version != 0 || in[i].Position != 0 {
			t.Errorf("event %d: Append changed the caller's envelope: Version %d, Position %d", i, in[i].Version, in[i].Position)
		}
	}

	second := mustAppend(t, ctx, s, stream, 3, deposits(agg, 3, 2))
	for i, env := range second {
		if env.Version != int64(4+i) {
			t.Errorf("second batch event %d: Version = %d, want %d", i, env.Version, 4+i)
		}
	}
	if second[0].Position <= first[2].Position || second[1].Position != second[0].Position+1 {
		t.Errorf("second batch positions %d, %d; first batch ended at %d", second[0].Position, second[1].Position, first[2].Position)
	}

	got := wantLen(t, ctx, s, stream, 5)
	for i, want := range append(first, second...) {
		sameStored(t, fmt.Sprintf("Load event %d", i), got[i], want)
	}
}

func testAppendFillsDefaults(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, _ := newStream()
	before := time.Now()
	got := mustAppend(t, ctx, s, stream, eventstore.NoStream, []eventsource.Envelope{{Event: Withdrawn{Amount: 3}}})
	env := got[0]
	if env.Type != "storetest.Withdrawn" {
		t.Errorf("Type = %q, want the event's type name", env.Type)
	}
	if env.ID == uuid.Nil || env.ID.Version() != 7 {
		t.Errorf("ID = %v, want a fresh UUID v7", env.ID)
	}
	if env.OccurredAt.Before(before.Add(-time.Second)) || env.OccurredAt.After(time.Now().Add(time.Second)) {
		t.Errorf("OccurredAt = %v, want about now (%v)", env.OccurredAt, before)
	}
	loaded := wantLen(t, ctx, s, stream, 1)
	sameStored(t, "Load", loaded[0], env)
}

func testExpectedVersion(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()

	_, err := s.Append(ctx, stream, 2, deposits(agg, 0, 1))
	wantConflict(t, err, stream, 2, 0)
	wantLen(t, ctx, s, stream, 0)

	mustAppend(t, ctx, s, stream, eventstore.NoStream, deposits(agg, 0, 2))

	_, err = s.Append(ctx, stream, eventstore.NoStream, deposits(agg, 10, 1))
	wantConflict(t, err, stream, eventstore.NoStream, 2)
	_, err = s.Append(ctx, stream, 1, deposits(agg, 10, 1))
	wantConflict(t, err, stream, 1, 2)
	_, err = s.Append(ctx, stream, 5, deposits(agg, 10, 1))
	wantConflict(t, err, stream, 5, 2)
	wantLen(t, ctx, s, stream, 2)

	if got := mustAppend(t, ctx, s, stream, 2, deposits(agg, 2, 1)); got[0].Version != 3 {
		t.Fatalf("append at the current version: Version = %d, want 3", got[0].Version)
	}
	if got := mustAppend(t, ctx, s, stream, eventstore.AnyVersion, deposits(agg, 3, 2)); got[0].Version != 4 || got[1].Version != 5 {
		t.Fatalf("AnyVersion on an existing stream: versions %d, %d, want 4, 5", got[0].Version, got[1].Version)
	}
	other, otherAgg := newStream()
	if got := mustAppend(t, ctx, s, other, eventstore.AnyVersion, deposits(otherAgg, 0, 1)); got[0].Version != 1 {
		t.Fatalf("AnyVersion on a new stream: Version = %d, want 1", got[0].Version)
	}

	_, err = s.Append(ctx, stream, -2, deposits(agg, 10, 1))
	if err == nil || errors.Is(err, eventsource.ErrConcurrencyConflict) {
		t.Fatalf("expected version -2: err = %v, want an error that is not a conflict", err)
	}

	got := wantLen(t, ctx, s, stream, 5)
	for i, env := range got {
		if env.Event != (Deposited{Amount: i}) {
			t.Fatalf("event %d = %#v, want %#v: a refused append left something behind", i, env.Event, Deposited{Amount: i})
		}
	}
}

func testConflictError(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	mustAppend(t, ctx, s, stream, eventstore.NoStream, deposits(agg, 0, 4))
	got, err := s.Append(ctx, stream, 3, deposits(agg, 4, 1))
	wantConflict(t, err, stream, 3, 4)
	if got != nil {
		t.Fatalf("a refused append returned %d envelopes, want nil", len(got))
	}
	var ce *eventsource.ConflictError
	errors.As(err, &ce)
	// A writer retries with Actual; the retry must succeed.
	if got := mustAppend(t, ctx, s, stream, ce.Actual, deposits(agg, 4, 1)); got[0].Version != 5 {
		t.Fatalf("retry at Actual: Version = %d, want 5", got[0].Version)
	}
}

func testAtomicBatch(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	stored := mustAppend(t, ctx, s, stream, eventstore.NoStream, deposits(agg, 0, 2))

	refused := deposits(agg, 100, 5)
	_, err := s.Append(ctx, stream, 1, refused)
	wantConflict(t, err, stream, 1, 2)
	wantLen(t, ctx, s, stream, 2)

	// None of the refused events may exist anywhere in the log.
	ids := idSet(stored, refused)
	own := readOwn(t, ctx, s, stored[0].Position, ids)
	if len(own) != 2 || own[0].ID != stored[0].ID || own[1].ID != stored[1].ID {
		t.Fatalf("ReadAll found %d of this test's events, want exactly the 2 stored ones", len(own))
	}

	next := mustAppend(t, ctx, s, stream, 2, deposits(agg, 2, 1))
	if next[0].Version != 3 {
		t.Fatalf("after a refused batch: Version = %d, want 3", next[0].Version)
	}
}

func testInvalidEvents(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	mustAppend(t, ctx, s, stream, eventstore.NoStream, deposits(agg, 0, 1))

	withNil := deposits(agg, 1, 3)
	withNil[1].Event = nil
	if _, err := s.Append(ctx, stream, 1, withNil); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Fatalf("batch with a nil Event: err = %v, want ErrInvalidEvent", err)
	}
	mismatch := deposits(agg, 1, 1)
	mismatch[0].Type = "storetest.Withdrawn"
	if _, err := s.Append(ctx, stream, 1, mismatch); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Fatalf("Type that disagrees with the Event: err = %v, want ErrInvalidEvent", err)
	}
	wantLen(t, ctx, s, stream, 1)
}

func testEmptyAppend(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	got, err := s.Append(ctx, stream, eventstore.NoStream, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty append to a new stream: %d envelopes, err %v; want none, nil", len(got), err)
	}
	wantLen(t, ctx, s, stream, 0)
	_, err = s.Append(ctx, stream, 1, nil)
	wantConflict(t, err, stream, 1, 0)

	mustAppend(t, ctx, s, stream, eventstore.NoStream, deposits(agg, 0, 2))
	if _, err := s.Append(ctx, stream, 2, []eventsource.Envelope{}); err != nil {
		t.Fatalf("empty append at the current version: %v", err)
	}
	_, err = s.Append(ctx, stream, 1, nil)
	wantConflict(t, err, stream, 1, 2)
	wantLen(t, ctx, s, stream, 2)
}

func testLargeBatch(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	const n = 2500
	got := mustAppend(t, ctx, s, stream, eventstore.NoStream, deposits(agg, 0, n))
	for i, env := range got {
		if env.Version != int64(i+1) || env.Position != got[0].Position+int64(i) {
			t.Fatalf("event %d: Version %d, Position %d; want %d, %d", i, env.Version, env.Position, i+1, got[0].Position+int64(i))
		}
	}
	loaded := wantLen(t, ctx, s, stream, n)
	for i := range loaded {
		sameStored(t, fmt.Sprintf("event %d", i), loaded[i], got[i])
	}
	own := readOwn(t, ctx, s, got[0].Position, idSet(got))
	if len(own) != n {
		t.Fatalf("ReadAll found %d of the batch's events, want %d", len(own), n)
	}
}

func testLoad(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	other, otherAgg := newStream()
	var want []eventsource.Envelope
	// Interleave two streams so that versions and positions differ.
	for i := range 5 {
		want = append(want, mustAppend(t, ctx, s, stream, int64(i), deposits(agg, i, 1))...)
		if i < 3 {
			mustAppend(t, ctx, s, other, int64(i), deposits(otherAgg, 100+i, 1))
		}
	}

	for _, tc := range []struct {
		from  int64
		first int // index into want of the first event expected
	}{
		{-1, 0}, {0, 0}, {1, 0}, {2, 1}, {4, 3}, {5, 4}, {6, 5}, {100, 5},
	} {
		got := load(t, ctx, s, stream, tc.from)
		if len(got) != len(want)-tc.first {
			t.Fatalf("Load(from %d) yielded %d events, want %d", tc.from, len(got), len(want)-tc.first)
		}
		for i := range got {
			sameStored(t, fmt.Sprintf("Load(from %d) event %d", tc.from, i), got[i], want[tc.first+i])
		}
	}

	missing, _ := newStream()
	if got := load(t, ctx, s, missing, 1); len(got) != 0 {
		t.Fatalf("Load of a missing stream yielded %d events", len(got))
	}
	if got := wantLen(t, ctx, s, other, 3); got[2].Event != (Deposited{Amount: 102}) {
		t.Fatalf("other stream's last event = %#v", got[2].Event)
	}
}

// testAmbiguousNames appends to aggregates whose type and ID, joined with
// a plain dash, spell the same stream name: their streams must be separate,
// so that none of them conflicts with or loads another's events.
func testAmbiguousNames(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	// A dash-free prefix unique to this run, so a shared store's other
	// streams never interfere.
	prefix := "storetest" + strings.ReplaceAll(uuid.NewString(), "-", "")
	aggregates := []struct{ typ, id string }{
		{prefix + "-Item", "42"},   // naively prefix-Item-42
		{prefix, "Item-42"},        // naively prefix-Item-42 too
		{prefix + "%2DItem", "42"}, // what a percent-escape of "-Item" spells
	}
	var stored [][]eventsource.Envelope
	for i, agg := range aggregates {
		stream := eventsource.StreamID(agg.typ, agg.id)
		events := deposits(agg.id, 10*i, i+1)
		for j := range events {
			events[j].AggregateType = agg.typ
		}
		stored = append(stored, mustAppend(t, ctx, s, stream, eventstore.NoStream, events))
	}
	for i, agg := range aggregates {
		stream := eventsource.StreamID(agg.typ, agg.id)
		got := wantLen(t, ctx, s, stream, i+1)
		for j := range got {
			sameStored(t, fmt.Sprintf("stream %q event %d", stream, j), got[j], stored[i][j])
		}
	}
}

func testReadAll(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	a, aggA := newStream()
	b, aggB := newStream()
	var want []eventsource.Envelope
	want = append(want, mustAppend(t, ctx, s, a, eventstore.NoStream, deposits(aggA, 0, 2))...)
	want = append(want, mustAppend(t, ctx, s, b, eventstore.NoStream, deposits(aggB, 0, 3))...)
	want = append(want, mustAppend(t, ctx, s, a, 2, deposits(aggA, 2, 1))...)
	for i := 1; i < len(want); i++ {
		if want[i].Position <= want[i-1].Position {
			t.Fatalf("append %d got position %d after %d: positions must grow in commit order", i, want[i].Position, want[i-1].Position)
		}
	}

	ids := idSet(want)
	for start := range want {
		from := want[start].Position
		var first *eventsource.Envelope
		for env, err := range s.ReadAll(ctx, from) {
			if err != nil {
				t.Fatal(err)
			}
			first = &env
			break
		}
		if first == nil {
			t.Fatalf("ReadAll(%d) yielded nothing", from)
		}
		sameStored(t, fmt.Sprintf("ReadAll(%d) first event", from), *first, want[start])

		own := readOwn(t, ctx, s, from, ids)
		if len(own) != len(want)-start {
			t.Fatalf("ReadAll(%d) found %d of this test's events, want %d", from, len(own), len(want)-start)
		}
		for i := range own {
			sameStored(t, fmt.Sprintf("ReadAll(%d) own event %d", from, i), own[i], want[start+i])
		}
	}

	for _, from := range []int64{-5, 0, 1} {
		for env, err := range s.ReadAll(ctx, from) {
			if err != nil {
				t.Fatal(err)
			}
			if env.Position != 1 {
				t.Fatalf("ReadAll(%d) starts at position %d, want 1", from, env.Position)
			}
			break
		}
	}
	if got := collect(t, s.ReadAll(ctx, 1<<62)); len(got) != 0 {
		t.Fatalf("ReadAll past the end yielded %d events", len(got))
	}
}

func testRoundTrip(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	// A stream ID and aggregate ID with characters that need quoting somewhere.
	aggID := `ünï "cødé" ` + uuid.NewString() + ` ' ; -- \ 🙂`
	stream := eventsource.StreamID("storetest/rt", aggID)
	renamed := &Renamed{Name: "Zoë <b>&</b> \"quoted\"", Tags: []string{"a", "", "ç"}, Attrs: map[string]string{"k": "v"}}
	renamed.Owner.ID = 1 << 53
	renamed.Owner.Admin = true
	md := eventsource.Metadata{
		CorrelationID: "corr-" + uuid.NewString(),
		CausationID:   "cause-1",
		TenantID:      "tenant-ß",
		TraceParent:   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceState:    "rojo=00f067aa0ba902b7",
		Extra:         map[string]string{"user": "ädmin", "empty": ""},
	}
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	in := []eventsource.Envelope{
		{
			ID:            uuid.Must(uuid.NewV7()),
			AggregateType: "storetest/rt",
			AggregateID:   aggID,
			OccurredAt:    time.Date(2024, 2, 29, 23, 59, 58, 123456789, zone),
			Metadata:      md,
			Event:         renamed,
		},
		{
			ID:            uuid.Must(uuid.NewV7()),
			AggregateType: "storetest/rt",
			AggregateID:   aggID,
			OccurredAt:    time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC),
			Event:         Withdrawn{Amount: -7},
		},
		{
			ID:            uuid.Must(uuid.NewV7()),
			AggregateType: "storetest/rt",
			AggregateID:   aggID,
			OccurredAt:    time.Now(), // with a monotonic reading, which must not matter
			Metadata:      eventsource.Metadata{TenantID: "t"},
			Event:         Deposited{Amount: 1<<31 + 5},
		},
	}
	got := mustAppend(t, ctx, s, stream, eventstore.NoStream, in)
	for i := range in {
		if !storedTime(got[i].OccurredAt, in[i].OccurredAt) {
			t.Errorf("event %d: Append returned OccurredAt %v, appended %v", i, got[i].OccurredAt, in[i].OccurredAt)
		}
		if got[i].ID != in[i].ID || !reflect.DeepEqual(got[i].Metadata, in[i].Metadata) || !reflect.DeepEqual(got[i].Event, in[i].Event) {
			t.Errorf("event %d: Append returned %+v, appended %+v", i, got[i], in[i])
		}
	}
	loaded := wantLen(t, ctx, s, stream, len(in))
	own := readOwn(t, ctx, s, got[0].Position, idSet(got))
	if len(own) != len(in) {
		t.Fatalf("ReadAll found %d of this test's events, want %d", len(own), len(in))
	}
	for i := range in {
		sameStored(t, fmt.Sprintf("Load event %d", i), loaded[i], got[i])
		sameStored(t, fmt.Sprintf("ReadAll event %d", i), own[i], got[i])
	}
	if _, ok := loaded[0].Event.(*Renamed); !ok {
		t.Fatalf("a type registered as a pointer decoded as %T", loaded[0].Event)
	}
	if !loaded[1].Metadata.IsZero() {
		t.Fatalf("empty metadata came back as %+v", loaded[1].Metadata)
	}
}

func testCopies(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	in := deposits(agg, 0, 1)
	in[0].Metadata.Extra = map[string]string{"k": "v"}
	want := maps.Clone(in[0].Metadata.Extra)
	got := mustAppend(t, ctx, s, stream, eventstore.NoStream, in)

	// Whatever the caller does with its envelopes afterwards, the store
	// keeps what was appended.
	in[0].Metadata.Extra["k"] = "changed by the caller"
	in[0].AggregateID = "changed"
	got[0].Metadata.Extra["k"] = "changed through the result"
	loaded := load(t, ctx, s, stream, 1)
	loaded[0].Metadata.Extra["k"] = "changed by a reader"
	for _, env := range load(t, ctx, s, stream, 1) {
		if !maps.Equal(env.Metadata.Extra, want) || env.AggregateID != agg {
			t.Fatalf("stored envelope changed with the caller's copies: Extra %v, AggregateID %q", env.Metadata.Extra, env.AggregateID)
		}
	}
}

func testEarlyBreak(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	in := mustAppend(t, ctx, s, stream, eventstore.NoStream, deposits(agg, 0, 10))
	// More early exits than any sensible connection pool has connections:
	// an iterator that leaks its rows would exhaust it.
	for i := range 50 {
		n := 0
		for env, err := range s.Load(ctx, stream, 1) {
			if err != nil {
				t.Fatal(err)
			}
			n++
			if env.Version != int64(n) {
				t.Fatalf("Load yielded version %d as event %d", env.Version, n)
			}
			if n == 2 {
				break
			}
		}
		for _, err := range s.ReadAll(ctx, in[3].Position) {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		if n != 2 {
			t.Fatalf("iteration %d: Load stopped after %d events", i, n)
		}
	}
	mustAppend(t, ctx, s, stream, 10, deposits(agg, 10, 1))
	wantLen(t, ctx, s, stream, 11)
}

func testAppendWhileIterating(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	src, srcAgg := newStream()
	dst, dstAgg := newStream()
	in := mustAppend(t, ctx, s, src, eventstore.NoStream, deposits(srcAgg, 0, 5))

	// A handler that appends while it ranges over Load.
	n := int64(0)
	for env, err := range s.Load(ctx, src, 1) {
		if err != nil {
			t.Fatal(err)
		}
		mustAppend(t, ctx, s, dst, n, deposits(dstAgg, int(env.Version), 1))
		n++
	}
	wantLen(t, ctx, s, dst, 5)

	// One that appends to the stream it is reading, and to the global log
	// it is reading: the reads end at what was committed when they began.
	n = 0
	for _, err := range s.Load(ctx, src, 1) {
		if err != nil {
			t.Fatal(err)
		}
		mustAppend(t, ctx, s, src, eventstore.AnyVersion, deposits(srcAgg, 100, 1))
		n++
	}
	if n != 5 {
		t.Fatalf("Load yielded %d events while the handler appended to the stream, want the 5 it started with", n)
	}
	ids := idSet(in)
	seen := 0
	for env, err := range s.ReadAll(ctx, in[0].Position) {
		if err != nil {
			t.Fatal(err)
		}
		if ids[env.ID] {
			seen++
			appended := mustAppend(t, ctx, s, src, eventstore.AnyVersion, deposits(srcAgg, 200, 1))
			ids[appended[0].ID] = true // would be read again if the read were unbounded
		}
		if seen > 1000 {
			t.Fatal("ReadAll keeps yielding the events appended during the read")
		}
	}
	if seen != 5 {
		t.Fatalf("ReadAll yielded %d of the stream's first events, want 5", seen)
	}
	wantLen(t, ctx, s, src, 15)
}

func testCancelledContext(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	in := mustAppend(t, ctx, s, stream, eventstore.NoStream, deposits(agg, 0, 2))

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Append(cancelled, stream, 2, deposits(agg, 2, 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context: err = %v, want context.Canceled", err)
	}
	other, otherAgg := newStream()
	if _, err := s.Append(cancelled, other, eventstore.NoStream, deposits(otherAgg, 0, 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append to a new stream with a cancelled context: err = %v, want context.Canceled", err)
	}
	wantLen(t, ctx, s, stream, 2)
	wantLen(t, ctx, s, other, 0)

	for name, seq := range map[string]seq{
		"Load":    s.Load(cancelled, stream, 1),
		"ReadAll": s.ReadAll(cancelled, in[0].Position),
	} {
		var errs []error
		events := 0
		for _, err := range seq {
			if err != nil {
				errs = append(errs, err)
			} else {
				events++
			}
		}
		if events != 0 || len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
			t.Fatalf("%s with a cancelled context: %d events, errors %v; want no event and one context.Canceled", name, events, errs)
		}
	}
}

func testCancelDuringIteration(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	in := mustAppend(t, ctx, s, stream, eventstore.NoStream, deposits(agg, 0, 3000))
	for name, read := range map[string]func(context.Context) seq{
		"Load":    func(c context.Context) seq { return s.Load(c, stream, 1) },
		"ReadAll": func(c context.Context) seq { return s.ReadAll(c, in[0].Position) },
	} {
		c, cancel := context.WithCancel(ctx)
		events, errs := 0, 0
		var last error
		for _, err := range read(c) {
			if err != nil {
				errs++
				last = err
				continue
			}
			events++
			if events == 10 {
				cancel()
			}
		}
		cancel()
		// The event after the cancellation is an error, and the sequence
		// ends there.
		if events != 10 || errs != 1 || !errors.Is(last, context.Canceled) {
			t.Fatalf("%s cancelled after 10 events: yielded %d events and %d errors (last %v); want 10 and one context.Canceled",
				name, events, errs, last)
		}
	}
}

// testConcurrentExactVersion races writers that each append one event at a
// time with the version they believe is current: every version must have
// exactly one winner, and the stream must hold exactly the winners' events.
func testConcurrentExactVersion(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	stream, agg := newStream()
	const writers, attempts = 50, 20

	type win struct {
		version int64
		id      uuid.UUID
	}
	var (
		mu        sync.Mutex
		wins      []win
		attempted = make(map[uuid.UUID]bool)
		conflicts int
		failures  []error
		wg        sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			known := eventstore.NoStream
			for a := range attempts {
				env := deposits(agg, w*attempts+a, 1)
				mu.Lock()
				attempted[env[0].ID] = true
				mu.Unlock()
				got, err := s.Append(ctx, stream, known, env)
				var ce *eventsource.ConflictError
				mu.Lock()
				switch {
				case err == nil:
					wins = append(wins, win{got[0].Version, got[0].ID})
					known = got[0].Version
				case errors.As(err, &ce):
					conflicts++
					known = ce.Actual
				default:
					failures = append(failures, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d appends failed with errors other than conflicts, first: %v", len(failures), failures[0])
	}
	if len(wins)+conflicts != writers*attempts {
		t.Fatalf("%d wins + %d conflicts != %d attempts", len(wins), conflicts, writers*attempts)
	}
	if len(wins) == 0 {
		t.Fatal("no append succeeded")
	}
	byVersion := make(map[int64]uuid.UUID)
	for _, w := range wins {
		if prev, dup := byVersion[w.version]; dup {
			t.Fatalf("version %d won twice: events %v and %v", w.version, prev, w.id)
		}
		byVersion[w.version] = w.id
	}
	loaded := wantLen(t, ctx, s, stream, len(wins))
	for _, env := range loaded {
		if byVersion[env.Version] != env.ID {
			t.Fatalf("version %d holds event %v, but %v won it", env.Version, env.ID, byVersion[env.Version])
		}
		if !attempted[env.ID] {
			t.Fatalf("version %d holds an event nobody appended", env.Version)
		}
	}
	t.Logf("%d writers x %d attempts: %d won, %d conflicts", writers, attempts, len(wins), conflicts)
}

// testConcurrentRetry has 1000 goroutines append one event each to the same
// stream, retrying with the version a conflict reports until they succeed.
func testConcurrentRetry(t *testing.T, s eventstore.Store) {
	RetryAppends(t, []eventstore.Store{s}, 1000)
}

// RetryAppends has n goroutines append one event each to one new stream,
// spread over stores (which may be handles to the same database, e.g. two
// connection pools standing for two processes). On a conflict a goroutine
// reloads the stream's version and retries, until it wins. The stream must
// end with exactly the n events, each once, at versions 1..n.
//
// At most retryInFlight goroutines are inside their retry loop at a time.
// Without that bound the test measures the connection pool, not the store:
// a loser waits behind every other goroutine for a connection, finds its
// version stale again, and the run needs about n*n attempts.
func RetryAppends(t *testing.T, stores []eventstore.Store, n int) {
	t.Helper()
	const retryInFlight = 16
	ctx := testContext(t)
	stream, agg := newStream()
	ids := make([]uuid.UUID, n)
	versions := make([]int64, n)
	errs := make([]error, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		attempts int
		inFlight = make(chan struct{}, retryInFlight)
	)
	for i := range n {
		s := stores[i%len(stores)]
		env := deposits(agg, i, 1)
		ids[i] = env[0].ID
		wg.Go(func() {
			select {
			case inFlight <- struct{}{}:
				defer func() { <-inFlight }()
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			known := eventstore.NoStream
			for tries := 1; ; tries++ {
				got, err := s.Append(ctx, stream, known, env)
				var ce *eventsource.ConflictError
				switch {
				case err == nil:
					versions[i] = got[0].Version
					mu.Lock()
					attempts += tries
					mu.Unlock()
					return
				case errors.As(err, &ce):
					// Reload: read the stream from the version the conflict
					// reported, which it cannot be behind.
					known = ce.Actual
					if ce.Actual == 0 {
						continue
					}
					reloaded := int64(0)
					for env, err := range s.Load(ctx, stream, ce.Actual) {
						if err != nil {
							errs[i] = err
							return
						}
						reloaded = env.Version
					}
					if reloaded < ce.Actual {
						errs[i] = fmt.Errorf("reloaded version %d, but a conflict reported %d", reloaded, ce.Actual)
						return
					}
					known = reloaded
				default:
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("appends failed: %v", err)
	}
	loaded := wantLen(t, ctx, stores[0], stream, n)
	pos := make(map[uuid.UUID]int64, n)
	for _, env := range loaded {
		if _, dup := pos[env.ID]; dup {
			t.Fatalf("event %v stored twice", env.ID)
		}
		pos[env.ID] = env.Version
	}
	for i, id := range ids {
		if pos[id] != versions[i] {
			t.Fatalf("goroutine %d won version %d, the stream has its event at %d", i, versions[i], pos[id])
		}
	}
	t.Logf("%d appends over %d store(s): %d attempts", n, len(stores), attempts)
}

// testReadAllWhileAppending follows the global log from a checkpoint while
// writers append, the way a projection does: it must see every committed
// event exactly once, in contiguous positions, without skipping events that
// were committed late.
func testReadAllWhileAppending(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	marker, markerAgg := newStream()
	start := mustAppend(t, ctx, s, marker, eventstore.NoStream, deposits(markerAgg, 0, 1))[0].Position

	const writers, appends = 6, 40
	run := uuid.NewString() // every writer's aggregate ID starts with it
	var (
		mu       sync.Mutex
		appended = make(map[uuid.UUID]int64) // ID -> position
		failures []error
		wg       sync.WaitGroup
		notify   = make(chan struct{}, 1)
		done     = make(chan struct{})
	)
	for w := range writers {
		wg.Go(func() {
			agg := fmt.Sprintf("%s-%d", run, w)
			stream := eventsource.StreamID("storetest", agg)
			version := int64(0)
			for i := range appends {
				got, err := s.Append(ctx, stream, version, deposits(agg, i, 1+i%3))
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
					mu.Unlock()
					return
				}
				for _, env := range got {
					appended[env.ID] = env.Position
				}
				mu.Unlock()
				version += int64(len(got))
				select {
				case notify <- struct{}{}:
				default:
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()

	seen := make(map[uuid.UUID]int64)
	next := start + 1
	finished := false
	for {
		progress := false
		for env, err := range s.ReadAll(ctx, next) {
			if err != nil {
				t.Fatalf("ReadAll(%d): %v (seen %d events)", next, err, len(seen))
			}
			if env.Position != next {
				t.Fatalf("reader at checkpoint %d was given position %d: an event was skipped or repeated", next, env.Position)
			}
			next++
			progress = true
			if len(env.AggregateID) > len(run) && env.AggregateID[:len(run)] == run {
				if _, dup := seen[env.ID]; dup {
					t.Fatalf("event %v read twice", env.ID)
				}
				seen[env.ID] = env.Position
			}
		}
		if finished {
			break
		}
		if !progress {
			select {
			case <-notify:
			case <-done:
				// One more pass after the last commit.
				finished = true
			case <-ctx.Done():
				t.Fatalf("reader timed out at position %d with %d events seen", next, len(seen))
			}
		}
	}
	if len(failures) > 0 {
		t.Fatalf("%d appends failed, first: %v", len(failures), failures[0])
	}
	want := 0
	for i := range appends {
		want += writers * (1 + i%3)
	}
	if len(appended) != want || len(seen) != want {
		t.Fatalf("appended %d events, reader saw %d; want %d", len(appended), len(seen), want)
	}
	for id, p := range appended {
		if seen[id] != p {
			t.Fatalf("event %v appended at position %d, reader saw it at %d", id, p, seen[id])
		}
	}
	positions := slices.Collect(maps.Values(seen))
	slices.Sort(positions)
	t.Logf("reader followed %d events from position %d to %d", len(seen), positions[0], positions[len(positions)-1])
}

// testNULCharacters: a NUL character, which Go strings hold and JSON
// escapes, in a payload, in metadata or in an aggregate ID is either kept
// exactly or refused with ErrInvalidEvent, the whole batch with nothing
// stored (PostgreSQL's text and jsonb cannot hold it); never a raw driver
// error nor a changed value.
func testNULCharacters(t *testing.T, s eventstore.Store) {
	ctx := testContext(t)
	cases := []struct {
		name string
		edit func(env *eventsource.Envelope)
	}{
		{"payload", func(env *eventsource.Envelope) {
			env.Event = Withdrawn{Amount: 1, Note: "a\x00b"}
			env.Type = Withdrawn{}.EventType()
		}},
		{"metadata", func(env *eventsource.Envelope) { env.Metadata.CorrelationID = "c\x00d" }},
		{"aggregate ID", func(env *eventsource.Envelope) { env.AggregateID += "\x00x" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, agg := newStream()
			batch := deposits(agg, 0, 2)
			tc.edit(&batch[1])
			batch[0].AggregateID = batch[1].AggregateID
			stream := eventsource.StreamID("storetest", batch[1].AggregateID)
			_, err := s.Append(ctx, stream, eventstore.NoStream, batch)
			if err != nil {
				if !errors.Is(err, eventsource.ErrInvalidEvent) {
					t.Fatalf("Append with a NUL in the %s: %v, want nil or ErrInvalidEvent", tc.name, err)
				}
				wantLen(t, ctx, s, stream, 0)
				return
			}
			got := collect(t, s.Load(ctx, stream, 1))
			if len(got) != 2 {
				t.Fatalf("loaded %d events, want 2", len(got))
			}
			e := got[1]
			if e.AggregateID != batch[1].AggregateID || e.Metadata.CorrelationID != batch[1].Metadata.CorrelationID {
				t.Fatalf("loaded aggregate ID %q, correlation %q; want %q, %q", e.AggregateID, e.Metadata.CorrelationID,
					batch[1].AggregateID, batch[1].Metadata.CorrelationID)
			}
			if w, ok := batch[1].Event.(Withdrawn); ok && e.Event != w {
				t.Fatalf("loaded payload %#v, want %#v", e.Event, w)
			}
		})
	}
}
