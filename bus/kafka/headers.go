package kafka

import (
	"encoding/json"
	"strconv"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/internal/uuidtext"
)

// Header names; see the package documentation.
const (
	hdrEventID       = "es-event-id"
	hdrEventType     = "es-event-type"
	hdrAggregateType = "es-aggregate-type"
	hdrAggregateID   = "es-aggregate-id"
	hdrVersion       = "es-version"
	hdrContentType   = "content-type"
	hdrTraceParent   = "traceparent"
	hdrTraceState    = "tracestate"

	// Retry topic.
	hdrAttempt         = "es-attempt"
	hdrRetryAt         = "es-retry-at"
	hdrHandlers        = "es-handlers"
	hdrError           = "es-error"
	hdrOriginTopic     = "es-origin-topic"
	hdrOriginPartition = "es-origin-partition"
	hdrOriginOffset    = "es-origin-offset"
	hdrReplayOf        = "es-replay-of"

	// Dead-letter topic.
	hdrReason    = "es-reason"
	hdrAttempts  = "es-attempts"
	hdrGroup     = "es-group"
	hdrTime      = "es-time"
	hdrTombstone = "es-tombstone"
	// Set when the record was stored without the original bytes (too
	// large): their size; the origin headers say where they are.
	hdrDroppedSize = "es-dropped-size"
)

const contentTypeJSON = "application/json"

// batchHeaders builds the keys and headers of a Publish call's messages
// in two allocations, not one per value (eight or nine per event).
type batchHeaders struct {
	hs  []kafkago.Header
	buf []byte // the keys' and the headers' values, back to back
}

// eventHeaderCount is the most headers event gives an event.
const eventHeaderCount = 8

func newBatchHeaders(events []eventsource.Envelope) *batchHeaders {
	n := 0
	for i := range events {
		env := &events[i]
		n += len(env.AggregateID) + len(env.Type) + len(env.AggregateType) + 36 + 20 +
			len(contentTypeJSON) + len(env.Metadata.TraceParent) + len(env.Metadata.TraceState)
	}
	return &batchHeaders{hs: make([]kafkago.Header, 0, eventHeaderCount*len(events)), buf: make([]byte, 0, n)}
}

// value returns what append(buf) added as a slice of its own, which a
// later append cannot overwrite.
func (h *batchHeaders) value(start int) []byte {
	return h.buf[start:len(h.buf):len(h.buf)]
}

func (h *batchHeaders) str(s string) []byte {
	start := len(h.buf)
	h.buf = append(h.buf, s...)
	return h.value(start)
}

// event returns the message key of env, its aggregate ID, and its
// headers, which identify the event without decoding its value and carry
// its W3C trace context under the standard names. The key and the
// aggregate ID header share their bytes: kafka-go only reads them.
func (h *batchHeaders) event(env *eventsource.Envelope) (key []byte, headers []kafkago.Header) {
	first := len(h.hs)
	add := func(key string, value []byte) { h.hs = append(h.hs, kafkago.Header{Key: key, Value: value}) }
	start := len(h.buf)
	h.buf = uuidtext.Append(h.buf, env.ID)
	add(hdrEventID, h.value(start))
	add(hdrEventType, h.str(env.Type))
	add(hdrAggregateType, h.str(env.AggregateType))
	key = h.str(env.AggregateID)
	add(hdrAggregateID, key)
	start = len(h.buf)
	h.buf = strconv.AppendInt(h.buf, env.Version, 10)
	add(hdrVersion, h.value(start))
	add(hdrContentType, h.str(contentTypeJSON))
	if tp := env.Metadata.TraceParent; tp != "" {
		add(hdrTraceParent, h.str(tp))
	}
	if ts := env.Metadata.TraceState; ts != "" {
		add(hdrTraceState, h.str(ts))
	}
	return key, h.hs[first:len(h.hs):len(h.hs)]
}

// withHeaders returns base with the given headers replacing any of the
// same name, base unchanged.
func withHeaders(base []kafkago.Header, set ...kafkago.Header) []kafkago.Header {
	out := make([]kafkago.Header, 0, len(base)+len(set))
	for _, h := range base {
		replaced := false
		for _, s := range set {
			if s.Key == h.Key {
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, h)
		}
	}
	return append(out, set...)
}

func header(hs []kafkago.Header, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func encodeHandlers(names []string) []byte {
	if len(names) == 0 {
		return []byte("[]")
	}
	b, _ := json.Marshal(names)
	return b
}

func decodeHandlers(b []byte) []string {
	var names []string
	if json.Unmarshal(b, &names) != nil {
		return nil
	}
	return names
}
