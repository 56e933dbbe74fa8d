package eventstore_test

import (
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/storetest"
)

// The memory store keeps Go values, so it has no old rows: only the round
// trip of a versioned event applies.
func TestMemoryUpcasting(t *testing.T) {
	storetest.RunUpcasting(t, storetest.UpcastOptions{
		Open: func(*testing.T, *eventsource.Registry) eventstore.Store { return eventstore.NewMemory() },
	})
}
