package followtest

import (
	"context"
	"reflect"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/storetest"
)

// testRaw: a follower with Raw set hands fn RawEvents, one by one and in
// batches, when the store is a RawReader, and decoded events otherwise or
// without Raw.
func testRaw(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	events := appendEvents(t, s, 3)
	_, isRaw := s.(eventstore.RawReader)
	reg := storetest.NewRegistry()
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	for _, raw := range []bool{false, true} {
		// The follower starts just before events, which are contiguous:
		// each read's first events are they.
		var one, batched []eventsource.Envelope
		f := newFollower(t, c, s, events[0])
		f.Raw = raw
		if _, err := f.CatchUp(ctx, func(_ context.Context, env eventsource.Envelope) error {
			one = append(one, env)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		f = newFollower(t, c, s, events[0])
		f.Raw = raw
		if _, err := f.CatchUpBatches(ctx, func(_ context.Context, batch []eventsource.Envelope) error {
			batched = append(batched, batch...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, got := range [][]eventsource.Envelope{one, batched} {
			if len(got) < len(events) {
				t.Fatalf("Raw %v: read %d events, want at least %d", raw, len(got), len(events))
			}
			for i, want := range events {
				env := got[i]
				if env.ID != want.ID {
					t.Fatalf("Raw %v: event %d has ID %v, want %v", raw, i, env.ID, want.ID)
				}
				re, ok := env.Event.(eventsource.RawEvent)
				if ok != (raw && isRaw) {
					t.Fatalf("Raw %v on a %T: fn got a %T", raw, s, env.Event)
				}
				if !ok {
					continue
				}
				e, _, err := reg.DecodeVersion(re.Name, re.Schema, re.JSON)
				if err != nil || !reflect.DeepEqual(e, want.Event) {
					t.Errorf("RawEvent %s decodes as %#v, %v; want %#v", re.JSON, e, err, want.Event)
				}
			}
		}
	}
}
