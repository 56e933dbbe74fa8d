package kafka

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

// TestPublishErrorUnwrapsToItsCause: a publish the broker refuses used to
// return kafka-go's WriteErrors wrapped, which errors.Is and errors.As do
// not see through.
func TestPublishErrorUnwrapsToItsCause(t *testing.T) {
	// BatchBytes above the broker's message size limit (1 MiB), so that
	// the broker, not the client, refuses the large event.
	b := open(t, Config{Topic: uniqueTopic("puberr"), BatchBytes: 8 << 20})
	defer closeBus(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	big := bustest.NewEnvelope(strings.Repeat("k", 3<<19), 1, bustest.Ping{})
	err := b.Publish(ctx, big)
	var perr *PublishError
	if !errors.Is(err, kafkago.MessageSizeTooLarge) || !errors.As(err, &perr) {
		t.Fatalf("Publish of a too large event = %v (%T), want a *PublishError wrapping kafkago.MessageSizeTooLarge", err, errors.Unwrap(err))
	}
	if perr.Written != 0 || len(perr.Failed) != 1 || perr.Failed[0].EventID != big.ID.String() {
		t.Errorf("PublishError = %+v", perr)
	}
	if st := b.Stats(); st.Published != 0 {
		t.Errorf("published %d", st.Published)
	}
}

func TestPublishErrorOfWriteErrors(t *testing.T) {
	events := make([]eventsource.Envelope, 4)
	for i := range events {
		events[i] = bustest.NewEnvelope("a", int64(i+1), bustest.Ping{N: i})
	}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	written, err := publishError(events, kafkago.WriteErrors{nil, refused, kafkago.NotLeaderForPartition, refused})
	if written != 1 {
		t.Errorf("written %d, want 1", written)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) || !errors.Is(err, syscall.ECONNREFUSED) || !errors.Is(err, kafkago.NotLeaderForPartition) {
		t.Errorf("errors.Is/As do not reach the causes of %v", err)
	}
	var perr *PublishError
	if !errors.As(err, &perr) || len(perr.Failed) != 3 || perr.Failed[0].Index != 1 || perr.Failed[0].EventID != events[1].ID.String() {
		t.Fatalf("PublishError = %+v", perr)
	}
	if n := len(perr.Unwrap()); n != 2 {
		t.Errorf("Unwrap returned %d causes, want the 2 distinct ones", n)
	}
	if msg := err.Error(); !strings.Contains(msg, "3 of 4 events not written") || !strings.Contains(msg, "connection refused") {
		t.Errorf("Error() = %q", msg)
	}
	ctxErr := context.DeadlineExceeded
	if written, err := publishError(events, ctxErr); written != 0 || !errors.Is(err, ctxErr) {
		t.Errorf("publishError of a whole-call error = %d, %v", written, err)
	}
}
