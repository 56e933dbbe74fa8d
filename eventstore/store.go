// Package eventstore defines the Store that persists event streams with
// optimistic concurrency, an in-memory implementation, and the checkpoint
// store that projections and the outbox relay use to remember how far they
// have read. Durable stores live in subpackages; every store passes the
// conformance suite in eventstore/storetest.
package eventstore

import (
	"context"
	"iter"

	"github.com/eventsource-go/eventsource"
)

// Expected versions with a special meaning for Append.
const (
	// AnyVersion appends whatever the stream's current version is.
	AnyVersion int64 = -1
	// NoStream appends only if the stream does not exist yet.
	NoStream int64 = 0
)

// Store persists event streams.
//
// Append is atomic for its batch: either every event is stored or none is.
// Versions are 1-based and gap-free per stream. Global positions are 1-based
// and gap-free in commit order across all streams, which is what a
// projection checkpoint relies on: a reader that has seen position p never
// later finds an event committed below p.
type Store interface {
	// Append stores events at the end of streamID if the stream is at
	// expectedVersion (an exact version, NoStream or AnyVersion) and returns
	// them with Version and Position set. A stream at another version returns
	// an error matching eventsource.ErrConcurrencyConflict (a
	// *eventsource.ConflictError) and stores nothing. Appending no events
	// only checks the version.
	Append(ctx context.Context, streamID string, expectedVersion int64, events []eventsource.Envelope) ([]eventsource.Envelope, error)

	// Load yields the events of streamID with Version >= fromVersion, in
	// version order. A stream that does not exist yields nothing. An error
	// (a row that does not decode, a cancelled context) is yielded once and
	// ends the sequence.
	Load(ctx context.Context, streamID string, fromVersion int64) iter.Seq2[eventsource.Envelope, error]

	// ReadAll yields every event with Position >= fromPosition in global
	// order, up to the last event committed when the read began.
	ReadAll(ctx context.Context, fromPosition int64) iter.Seq2[eventsource.Envelope, error]
}

// CheckpointStore remembers, per named reader, the last global position it
// has processed.
type CheckpointStore interface {
	// Checkpoint returns the saved position, or 0 if none was saved.
	Checkpoint(ctx context.Context, name string) (int64, error)
	SaveCheckpoint(ctx context.Context, name string, position int64) error
}

// CheckpointSwapper is a CheckpointStore that saves a position only where
// the stored one is still what the reader last saw. A Follower saves
// through it when its store has it, so that its save never overwrites a
// checkpoint that someone else moved meanwhile: an operator's reset (a
// rebuild), or the next holder of a lease this follower lost. A wrapper
// that embeds a store with this method, and changes SaveCheckpoint, must
// change SwapCheckpoint too: the Follower calls that one.
type CheckpointSwapper interface {
	// SwapCheckpoint saves position if the stored checkpoint is old (0:
	// also when none is stored), and reports whether it did.
	SwapCheckpoint(ctx context.Context, name string, old, position int64) (bool, error)
}

// HeadReader is implemented by stores that can say their head cheaply: the
// position of the last event committed (0 when empty). A Follower asks it
// at the start of each pass, so that its Status shows the whole backlog,
// not only what it has read so far (after a restart, say).
type HeadReader interface {
	Head(ctx context.Context) (int64, error)
}
