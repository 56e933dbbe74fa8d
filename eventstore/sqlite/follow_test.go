package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/followtest"
)

func TestFollower(t *testing.T) {
	followtest.Run(t, func(t *testing.T) (eventstore.Store, eventstore.CheckpointStore) {
		s := open(t, filepath.Join(t.TempDir(), "events.db"))
		return s, s
	})
}
