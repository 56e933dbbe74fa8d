package postgres_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
	"github.com/eventsource-go/eventsource/eventstore/storetest"
)

// An append through one pool (another process) is announced to a
// subscriber of a store on another pool, through LISTEN/NOTIFY; a store in
// another schema of the same database does not hear it.
func TestOnAppendAcrossProcesses(t *testing.T) {
	url, schema := newSchema(t)
	a, b := newPool(t, url, schema), newPool(t, url, schema)
	if err := postgres.Migrate(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	writer := postgres.New(a, storetest.NewRegistry())
	listener := postgres.New(b, storetest.NewRegistry())
	other, _ := newStore(t) // another schema

	var heard, otherHeard atomic.Int64
	stop := listener.OnAppend(func(head int64) {
		if head > 0 {
			heard.Store(head)
		}
	})
	defer stop()
	stopOther := other.OnAppend(func(head int64) {
		if head > 0 {
			otherHeard.Store(head)
		}
	})
	defer stopOther()

	// The listener connects in the background: append until it hears.
	end := time.Now().Add(30 * time.Second)
	var last int64
	for heard.Load() == 0 {
		if time.Now().After(end) {
			t.Fatal("no announcement of an append made through another pool within 30s")
		}
		env := eventsource.NewEnvelope(storetest.Deposited{Amount: 1})
		env.AggregateType, env.AggregateID = "notify", uuid.NewString()
		out, err := writer.Append(t.Context(), eventsource.StreamID("notify", env.AggregateID), eventstore.NoStream, []eventsource.Envelope{env})
		if err != nil {
			t.Fatal(err)
		}
		last = out[0].Position
		deadline := time.Now().Add(100 * time.Millisecond)
		for heard.Load() < last && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	if got := heard.Load(); got != last {
		t.Errorf("heard head %d, want %d", got, last)
	}
	if got := otherHeard.Load(); got != 0 {
		t.Errorf("a store in another schema heard head %d", got)
	}
	stop()
	stop() // idempotent
}
