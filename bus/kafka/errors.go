package kafka

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// PublishError reports the events of one Publish call that the brokers did
// not acknowledge; the others were written. It unwraps to each distinct
// cause, so errors.Is and errors.As see them (a kafkago.Error code, a
// *net.OpError, …), which kafka-go's WriteErrors, a plain slice, does not
// let them do.
type PublishError struct {
	Written int            // events the brokers acknowledged
	Failed  []EventFailure // the rest, in publish order
}

// EventFailure is one event that was not written.
type EventFailure struct {
	Index   int    // its index in the Publish call
	EventID string // envelope ID
	Err     error
}

func (e *PublishError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kafka bus: publish: %d of %d events not written", len(e.Failed), len(e.Failed)+e.Written)
	for i, cause := range e.Unwrap() {
		if i == 3 {
			b.WriteString("; …")
			break
		}
		fmt.Fprintf(&b, "; %v", cause)
	}
	return b.String()
}

// Unwrap returns the distinct causes, for errors.Is and errors.As, and
// bus.ErrTooLarge when an event was over a size limit.
func (e *PublishError) Unwrap() []error {
	var out []error
	tooLarge := false
	for _, f := range e.Failed {
		if f.Err != nil && !containsError(out, f.Err) {
			out = append(out, f.Err)
			tooLarge = tooLarge || isTooLarge(f.Err)
		}
	}
	if tooLarge {
		out = append(out, bus.ErrTooLarge)
	}
	return out
}

// isTooLarge reports a record over the client's BatchBytes or the
// broker's message.max.bytes.
func isTooLarge(err error) bool {
	var tooLarge kafkago.MessageTooLargeError
	return errors.As(err, &tooLarge) || errors.Is(err, kafkago.MessageSizeTooLarge)
}

// containsError reports whether errs holds err. Only comparable errors
// compare (== would panic on others), which is enough to fold the one
// error kafka-go repeats for every message of a failed batch.
func containsError(errs []error, err error) bool {
	if !reflect.ValueOf(err).Comparable() {
		return false
	}
	for _, e := range errs {
		if reflect.TypeOf(e) == reflect.TypeOf(err) && reflect.ValueOf(e).Comparable() && e == err {
			return true
		}
	}
	return false
}

// publishError turns the error of Writer.WriteMessages for events into the
// error Publish returns, and says how many events were written.
// kafkago.WriteErrors, one error per message, becomes a *PublishError; any
// other error failed the whole call (nothing is known to be written) and
// is wrapped as it is.
func publishError(events []eventsource.Envelope, err error) (written int, _ error) {
	var werrs kafkago.WriteErrors
	if !errors.As(err, &werrs) {
		if isTooLarge(err) {
			// kafka-go refuses the whole call for one message over BatchBytes.
			return 0, fmt.Errorf("kafka bus: publish: %w: %w", bus.ErrTooLarge, err)
		}
		return 0, fmt.Errorf("kafka bus: publish: %w", err)
	}
	perr := &PublishError{}
	for i, e := range werrs {
		if e == nil {
			perr.Written++
			continue
		}
		f := EventFailure{Index: i, Err: e}
		if i < len(events) {
			f.EventID = events[i].ID.String()
		}
		perr.Failed = append(perr.Failed, f)
	}
	return perr.Written, perr
}
