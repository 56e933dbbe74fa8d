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
	// ReasonTypeMismatch: the transport's copy of the type (a stream
	// field, a header) disagrees with the envelope's, which is the truth.
	// Routing on either would be a guess, so neither handler runs.
	ReasonTypeMismatch Reason = "type_mismatch"
	// ReasonUnknownHandler: a retry or replay names handlers that are not
	// subscribed in the process that received it. DeadLetter.Handlers
	// lists the names; a replay once they are subscribed runs them.
	ReasonUnknownHandler Reason = "unknown_handler"
	// ReasonRetryRefused: a handler failed and the broker permanently
	// refused the message for a broker-side retry (ErrRefused).
	ReasonRetryRefused Reason = "retry_refused"
	// ReasonPermanent: a handler marked its error permanent
	// (bus.Permanent), so the event was dead-lettered without retries.
	ReasonPermanent Reason = "permanent"
	// ReasonUnknownVersion: the event's schema version is newer than this
	// process's code, or older with no upcaster chain to the current one
	// (eventsource.ErrUnknownSchemaVersion). A deploy that knows it can
	// replay the record.
	ReasonUnknownVersion Reason = "unknown_version"
)

// ErrRefused marks a broker's permanent refusal of a write, one that
// trying again cannot cure (a record over the broker's size limit).
// Settlers wrap such errors with it, so that the Dispatcher stops retrying:
// a refused dead letter is stored again without its body, a refused
// reschedule is dead-lettered instead.
var ErrRefused = errors.New("consumer: refused by the broker")

// ErrBodyDropped is Admin.Replay's error for a record stored without its
// bytes (DeadLetter.BodyDropped): there is nothing to deliver, and an
// empty body would only be dead-lettered again as malformed, losing the
// record's pointer to the original. Publish the original again from
// Source and SourceID, then Purge the record.
var ErrBodyDropped = errors.New("consumer: dead letter has no body to replay")

// ReasonFor classifies a decoding error.
func ReasonFor(err error) Reason {
	switch {
	case errors.Is(err, eventsource.ErrUnknownEventType):
		return ReasonUnknownType
	case errors.Is(err, eventsource.ErrUnknownSchemaVersion):
		return ReasonUnknownVersion
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
	Handlers []string // the subscriptions that failed (max_retries) or are missing (unknown_handler)
	Time     time.Time

	// What is known of the event; empty when the bytes did not decode.
	EventID       string
	EventType     string
	AggregateType string
	AggregateID   string
	Version       int64

	Source   string // where the message was read from (stream, queue, topic)
	SourceID string // its ID there
	Body     []byte // the original bytes, unchanged; empty when BodyDropped

	// BodyDropped: the broker refused the record with the original bytes
	// (too large), so it was stored without them; Size is their length,
	// and Source and SourceID say where to find them. Admin does not
	// replay such a record (ErrBodyDropped).
	BodyDropped bool
	Size        int
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
	// is an error matching eventsource.ErrNotFound; a BodyDropped record
	// is an error matching ErrBodyDropped, and stays in place. If the
	// replayed event is dead-lettered again, the new record keeps the
	// first Source and SourceID.
	Replay(ctx context.Context, id string) error
	// ReplayAll replays every record present when it starts, except
	// BodyDropped ones, which stay in place, and returns how many it
	// replayed.
	ReplayAll(ctx context.Context) (int, error)
	// Purge deletes every record and returns how many there were.
	Purge(ctx context.Context) (int64, error)
}
