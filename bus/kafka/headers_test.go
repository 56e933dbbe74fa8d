package kafka

import (
	"strconv"
	"testing"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
)

// TestBatchHeaders: every message of a batch gets its own key and header
// values, as event documents them, from two allocations for the
// whole batch.
func TestBatchHeaders(t *testing.T) {
	events := make([]eventsource.Envelope, 100)
	for i := range events {
		env := eventsource.Envelope{ID: uuid.New()}
		env.Type, env.AggregateType, env.AggregateID, env.Version = "OrderPlaced", "Order", "order-"+strconv.Itoa(i), int64(i+1)
		if i%2 == 0 {
			env.Metadata.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			env.Metadata.TraceState = "k=v" + strconv.Itoa(i)
		}
		events[i] = env
	}
	h := newBatchHeaders(events)
	keys := make([][]byte, len(events))
	headers := make([][]kafkagoHeader, len(events))
	for i := range events {
		var hds []kafkago.Header
		keys[i], hds = h.event(&events[i])
		for _, hd := range hds {
			headers[i] = append(headers[i], kafkagoHeader{hd.Key, string(hd.Value)})
		}
	}
	for i, env := range events {
		want := []kafkagoHeader{{hdrEventID, env.ID.String()}, {hdrEventType, env.Type}, {hdrAggregateType, env.AggregateType},
			{hdrAggregateID, env.AggregateID}, {hdrVersion, strconv.FormatInt(env.Version, 10)}, {hdrContentType, contentTypeJSON}}
		if env.Metadata.TraceParent != "" {
			want = append(want, kafkagoHeader{hdrTraceParent, env.Metadata.TraceParent}, kafkagoHeader{hdrTraceState, env.Metadata.TraceState})
		}
		if string(keys[i]) != env.AggregateID {
			t.Fatalf("event %d: key %q, want %q", i, keys[i], env.AggregateID)
		}
		if len(headers[i]) != len(want) {
			t.Fatalf("event %d: headers %v, want %v", i, headers[i], want)
		}
		for j := range want {
			if headers[i][j] != want[j] {
				t.Fatalf("event %d: header %d is %v, want %v", i, j, headers[i][j], want[j])
			}
		}
	}
	allocs := testing.AllocsPerRun(50, func() {
		h := newBatchHeaders(events)
		for i := range events {
			h.event(&events[i])
		}
	})
	if allocs > 3 { // the two buffers and the batchHeaders itself
		t.Fatalf("headers of %d events took %v allocations, want at most 3", len(events), allocs)
	}
}

type kafkagoHeader struct{ key, value string }
