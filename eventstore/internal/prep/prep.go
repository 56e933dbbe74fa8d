// Package prep holds the checks and defaults that every store applies to an
// append, so that the memory, SQLite and PostgreSQL stores accept and return
// exactly the same envelopes.
package prep

import (
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
)

// ExpectedVersion rejects expected versions below AnyVersion (-1): they are
// a caller bug, not a concurrency conflict.
func ExpectedVersion(v int64) error {
	if v < -1 {
		return fmt.Errorf("eventstore: invalid expected version %d", v)
	}
	return nil
}

// Batch validates events and returns copies ready to store, leaving the
// caller's slice untouched. A nil Event, or a Type that disagrees with
// Event.EventType(), fails with eventsource.ErrInvalidEvent; a missing Type,
// ID or OccurredAt is filled in (the event's type name, a UUID v7, now in
// UTC). Version and Position are left for the store.
func Batch(events []eventsource.Envelope) ([]eventsource.Envelope, error) {
	out := make([]eventsource.Envelope, len(events))
	copy(out, events)
	var now time.Time
	for i := range out {
		env := &out[i]
		if env.Event == nil {
			return nil, fmt.Errorf("%w: event %d of the batch has a nil Event", eventsource.ErrInvalidEvent, i)
		}
		name := env.Event.EventType()
		switch {
		case env.Type == "":
			env.Type = name
		case env.Type != name:
			return nil, fmt.Errorf("%w: event %d of the batch has Type %q but its Event is a %q",
				eventsource.ErrInvalidEvent, i, env.Type, name)
		}
		if env.Type == "" {
			return nil, fmt.Errorf("%w: event %d of the batch has an empty type name", eventsource.ErrInvalidEvent, i)
		}
		if env.ID == uuid.Nil {
			id, err := uuid.NewV7()
			if err != nil {
				return nil, fmt.Errorf("eventstore: new event ID: %w", err)
			}
			env.ID = id
		}
		if env.OccurredAt.IsZero() {
			if now.IsZero() {
				now = time.Now().UTC()
			}
			env.OccurredAt = now
		}
	}
	return out, nil
}

// CloneExtra gives md its own copy of the Extra map, so that a stored or
// yielded envelope shares no mutable state with the caller.
func CloneExtra(md *eventsource.Metadata) {
	if md.Extra != nil {
		md.Extra = maps.Clone(md.Extra)
	}
}
