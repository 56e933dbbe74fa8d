// Package aggregate gives domain types the bookkeeping of an event-sourced
// aggregate: an ID, a version, and the events raised since the last save.
//
// A domain type embeds Base, names its type, and applies events to its
// state. Command methods validate, then call Raise; they return an error
// instead of raising when the command is not allowed:
//
//	type Order struct {
//		aggregate.Base
//		placed bool
//	}
//
//	func (o *Order) AggregateType() string { return "Order" }
//
//	func (o *Order) Apply(e eventsource.Event) {
//		switch e.(type) {
//		case OrderPlaced:
//			o.placed = true
//		}
//	}
//
//	func (o *Order) Place(total int64) error {
//		if o.placed {
//			return ErrAlreadyPlaced
//		}
//		aggregate.Raise(o, OrderPlaced{Total: total})
//		return nil
//	}
package aggregate

import (
	"errors"
	"fmt"
	"iter"

	"github.com/eventsource-go/eventsource"
)

// Root is what the repository loads and saves: a type that embeds Base
// (which supplies the unexported method) and applies its events.
type Root interface {
	// AggregateType names the kind of aggregate, e.g. "Order". It is part
	// of every stream ID and envelope, so it must stay stable.
	AggregateType() string
	// Apply changes state for one event. It must not fail or validate:
	// events are facts, and replaying history calls Apply for each.
	Apply(eventsource.Event)

	// Supplied by Base.
	ID() string
	SetID(string)
	Version() int64
	CommittedVersion() int64
	Pending() []eventsource.Envelope
	base() *Base
}

// Base is embedded by aggregates. Its zero value is an aggregate with no ID
// and no history.
type Base struct {
	id        string
	version   int64 // version including pending events
	committed int64 // version of the last stored event
	pending   []eventsource.Envelope
}

func (b *Base) base() *Base { return b }

// ID returns the aggregate's ID.
func (b *Base) ID() string { return b.id }

// SetID sets the aggregate's ID; call it before raising the first event.
func (b *Base) SetID(id string) { b.id = id }

// Version is the version of the last event raised or loaded (0 when new).
func (b *Base) Version() int64 { return b.version }

// CommittedVersion is the version of the last stored event: the version the
// repository expects the stream to be at when it saves.
func (b *Base) CommittedVersion() int64 { return b.committed }

// Pending returns the events raised since the last save, in order.
func (b *Base) Pending() []eventsource.Envelope { return b.pending }

// ErrNoID is returned when events are raised on an aggregate without an ID.
var ErrNoID = errors.New("aggregate: no ID set")

// Raise applies e to a and records it as pending, with the next version.
// Metadata can be stamped later by the repository from the context.
func Raise(a Root, e eventsource.Event) {
	b := a.base()
	env := eventsource.NewEnvelope(e)
	env.AggregateType = a.AggregateType()
	env.AggregateID = b.id
	env.Version = b.version + 1
	a.Apply(e)
	b.version = env.Version
	b.pending = append(b.pending, env)
}

// ErrHistory matches a Replay error for a history that is not this
// aggregate's next events: a version that does not follow, or an event of
// another aggregate.
var ErrHistory = errors.New("aggregate: history does not continue the aggregate")

// Replay applies stored history to a, in order, and sets its versions. The
// history must continue the aggregate's current version without a gap, and
// be the aggregate's own (its ID, once a has one); otherwise Replay stops
// with an error matching ErrHistory.
func Replay(a Root, history iter.Seq2[eventsource.Envelope, error]) error {
	b := a.base()
	for env, err := range history {
		if err != nil {
			return err
		}
		if env.Version != b.version+1 {
			return fmt.Errorf("%w: %s %q: event version %d does not follow %d",
				ErrHistory, a.AggregateType(), b.id, env.Version, b.version)
		}
		if b.id == "" {
			b.id = env.AggregateID
		} else if env.AggregateID != "" && env.AggregateID != b.id {
			return fmt.Errorf("%w: %s %q: event %s at version %d is of aggregate %q",
				ErrHistory, a.AggregateType(), b.id, env.ID, env.Version, env.AggregateID)
		}
		a.Apply(env.Event)
		b.version = env.Version
		b.committed = env.Version
	}
	return nil
}

// MarkCommitted records that the pending events were stored: they stop
// being pending and the committed version catches up.
func MarkCommitted(a Root) {
	b := a.base()
	b.committed = b.version
	b.pending = nil
}

// Restore sets a's versions after its state was restored from a snapshot
// taken at version; events after it are then replayed with Replay.
func Restore(a Root, id string, version int64) {
	b := a.base()
	b.id = id
	b.version = version
	b.committed = version
	b.pending = nil
}

// Snapshotter is implemented by aggregates whose state can be saved as a
// snapshot, so that loading replays only the events after it.
type Snapshotter interface {
	Root
	// SnapshotSchema is the version of the snapshot's shape. Bump it when
	// the encoded state changes incompatibly: older snapshots are then
	// ignored and the aggregate is rebuilt from its events.
	SnapshotSchema() int
	MarshalSnapshot() ([]byte, error)
	UnmarshalSnapshot(data []byte) error
}
