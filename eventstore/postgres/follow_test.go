package postgres_test

import (
	"testing"

	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/followtest"
)

func TestFollower(t *testing.T) {
	// One schema for every subtest, as services share a database.
	s, _ := newStore(t)
	followtest.Run(t, func(t *testing.T) (eventstore.Store, eventstore.CheckpointStore) { return s, s })
}
