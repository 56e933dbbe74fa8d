package eventstore

import (
	"context"
	"time"
)

// Snapshot is an aggregate's state at one version, encoded by the aggregate.
// SchemaVersion lets an aggregate refuse state written by an older shape of
// itself; the repository then rebuilds from events.
type Snapshot struct {
	StreamID      string
	AggregateType string
	AggregateID   string
	Version       int64
	SchemaVersion int
	Data          []byte
	TakenAt       time.Time
}

// SnapshotStore keeps the latest snapshot per stream.
type SnapshotStore interface {
	// SaveSnapshot replaces the stream's snapshot unless the stored one is
	// at a later version: a snapshot at the same version replaces it, so
	// an aggregate whose snapshot schema changed can overwrite the old one.
	SaveSnapshot(ctx context.Context, s Snapshot) error
	// LoadSnapshot returns the stream's latest snapshot, or an error
	// matching eventsource.ErrNotFound.
	LoadSnapshot(ctx context.Context, streamID string) (Snapshot, error)
}
