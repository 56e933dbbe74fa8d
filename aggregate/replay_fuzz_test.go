package aggregate_test

import (
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
)

// FuzzReplayOrder feeds Replay a history of arbitrary versions after a
// snapshot at an arbitrary version: it must apply exactly the history
// that continues the snapshot one version at a time, and refuse any other
// at its first out-of-place event, with nothing after it applied.
func FuzzReplayOrder(f *testing.F) {
	f.Add(int64(0), []byte{1, 2, 3})
	f.Add(int64(0), []byte{1, 3})
	f.Add(int64(2), []byte{3, 4})
	f.Add(int64(2), []byte{1, 2, 3})
	f.Add(int64(0), []byte{1, 1})
	f.Add(int64(0), []byte{2, 1})
	f.Add(int64(-1), []byte{0})
	f.Fuzz(func(t *testing.T, snapshot int64, versions []byte) {
		a := &Account{}
		aggregate.Restore(a, "acc-1", snapshot)
		envs := make([]eventsource.Envelope, len(versions))
		for i, v := range versions {
			envs[i] = eventsource.Envelope{AggregateID: "acc-1", Version: snapshot + int64(v), Event: Deposited{Cents: 1}}
		}
		err := aggregate.Replay(a, history(envs...))
		applied := 0
		for i, v := range versions {
			if int(v) != i+1 {
				break
			}
			applied++
		}
		if (err == nil) != (applied == len(versions)) {
			t.Fatalf("snapshot %d, versions %v: Replay = %v", snapshot, versions, err)
		}
		if a.balance != int64(applied) || a.Version() != snapshot+int64(applied) || a.CommittedVersion() != a.Version() {
			t.Fatalf("snapshot %d, versions %v: balance %d, version %d, committed %d; want %d applied",
				snapshot, versions, a.balance, a.Version(), a.CommittedVersion(), applied)
		}
	})
}
