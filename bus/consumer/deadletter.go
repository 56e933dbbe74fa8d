package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/eventsource-go/eventsource"
)

// Reason says why a message was dead-lettered.
type Reason string

const (
	// ReasonMalformed: the bytes are not an envelope, or its payload does
	// not decode.
	ReasonMalformed Reason = "malformed"
	// ReasonUnknownType: the event type is not in the Registry.
	ReasonUnknownType Reason = "unknown_type"
	// ReasonMaxRetries: handlers failed RetryPolicy.MaxRetries times.
	ReasonMaxRetries Reason = "max_retries"
)

// ReasonFor classifies a decoding error.
func ReasonFor(err error) Reason {
	if errors.Is(err, eventsource.ErrUnknownEventType) {
		return ReasonUnknownType
	}
	return ReasonMalformed
}

// DeadLetter is one record in a consumer group's dead-letter destination.
type DeadLetter struct {
	// ID identifies the record in the dead-letter destination; Admin sets
	// it when listing, and Replay takes it.
	ID       string
	Reason   Reason
	Error    string   // the last error's text
	Attempts int      // how many times handlers were attempted
	Group    string   // the consumer group that gave up
	Handlers []string // names of the subscriptions that failed (max_retries only)
	Time     time.Time

	// What is known of the event; empty when the bytes did not decode.
	EventID       string
	EventType     string
	AggregateType string
	AggregateID   string
	Version       int64

	Source   string // where the message was read from (stream, queue, topic)
	SourceID string // its ID there
	Body     []byte // the original bytes, unchanged
}

// Admin manages one consumer group's dead letters. Every distributed bus
// offers one.
type Admin interface {
	// List returns up to limit records, oldest first, after the record
	// with ID after ("" to start at the oldest).
	List(ctx context.Context, after string, limit int) ([]DeadLetter, error)
	// Count returns how many records there are.
	Count(ctx context.Context) (int64, error)
	// Replay removes one record and delivers its event again to the same
	// group only, with a fresh retry budget. A record that does not exist
	// is an error matching eventsource.ErrNotFound.
	Replay(ctx context.Context, id string) error
	// ReplayAll replays every record present when it starts and returns
	// how many it replayed.
	ReplayAll(ctx context.Context) (int, error)
	// Purge deletes every record and returns how many there were.
	Purge(ctx context.Context) (int64, error)
}
