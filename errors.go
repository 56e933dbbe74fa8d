package eventsource

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the framework returns for these conditions
// matches one of them with errors.Is, whatever detail it carries.
var (
	// ErrUnknownEventType: a type name that the Registry does not know.
	ErrUnknownEventType = errors.New("eventsource: unknown event type")
	// ErrMalformed: bytes that do not decode into an envelope or a payload.
	ErrMalformed = errors.New("eventsource: malformed event")
	// ErrConcurrencyConflict: a stream's version is not the one the writer expected.
	ErrConcurrencyConflict = errors.New("eventsource: concurrency conflict")
	// ErrNotFound: a stream or aggregate that does not exist.
	ErrNotFound = errors.New("eventsource: not found")
	// ErrInvalidEvent: an event or envelope that cannot be accepted as given.
	ErrInvalidEvent = errors.New("eventsource: invalid event")
	// ErrNoAggregateID: an empty aggregate ID where one is required, such as
	// events raised before the aggregate's ID was set, or a Load of "".
	// Stored, such events would belong to no aggregate, and buses would
	// partition (order) them all under the empty key.
	ErrNoAggregateID = errors.New("eventsource: no aggregate ID")
	// ErrInvalidStreamID: a string that StreamID cannot have produced.
	ErrInvalidStreamID = errors.New("eventsource: invalid stream ID")
)

// DecodeError says why bytes could not become an event. It matches
// ErrUnknownEventType, ErrUnknownSchemaVersion or ErrMalformed with
// errors.Is, and its cause (a JSON syntax error, say) with errors.As.
type DecodeError struct {
	Type  string // the event type name, when it was read
	Kind  error  // ErrUnknownEventType, ErrUnknownSchemaVersion or ErrMalformed
	Cause error  // the underlying error, if any
}

func (e *DecodeError) Error() string {
	msg := e.Kind.Error()
	if e.Type != "" {
		msg += fmt.Sprintf(" %q", e.Type)
	}
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

func (e *DecodeError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Cause}
}

// ConflictError reports an optimistic-concurrency failure on one stream.
// It matches ErrConcurrencyConflict with errors.Is.
type ConflictError struct {
	StreamID string
	Expected int64 // the version the writer expected (AnyVersion, NoStream or exact)
	Actual   int64 // the stream's version when the append was refused
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("eventsource: concurrency conflict on stream %q: expected version %d, actual %d",
		e.StreamID, e.Expected, e.Actual)
}

func (e *ConflictError) Is(target error) bool { return target == ErrConcurrencyConflict }
