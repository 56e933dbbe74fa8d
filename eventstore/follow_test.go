package eventstore_test

import (
	"testing"

	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/followtest"
)

func TestFollower(t *testing.T) {
	followtest.Run(t, func(t *testing.T) (eventstore.Store, eventstore.CheckpointStore) {
		return eventstore.NewMemory(), eventstore.NewMemoryCheckpoints()
	})
}
