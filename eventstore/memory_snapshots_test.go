package eventstore_test

import (
	"testing"

	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/storetest"
)

func TestMemorySnapshotsConformance(t *testing.T) {
	storetest.RunSnapshots(t, func(t *testing.T) eventstore.SnapshotStore { return eventstore.NewMemorySnapshots() })
}

// The suite is written for shared stores; run it once more with every
// subtest on the same instance.
func TestMemorySnapshotsConformanceShared(t *testing.T) {
	s := eventstore.NewMemorySnapshots()
	storetest.RunSnapshots(t, func(t *testing.T) eventstore.SnapshotStore { return s })
}
