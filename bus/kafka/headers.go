package kafka

import (
	"encoding/json"
	"strconv"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
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

// eventHeaders identify the event without decoding its value, and carry
// its W3C trace context under the standard names.
func eventHeaders(env *eventsource.Envelope) []kafkago.Header {
	h := make([]kafkago.Header, 0, 8)
	h = append(h,
		kafkago.Header{Key: hdrEventID, Value: []byte(env.ID.String())},
		kafkago.Header{Key: hdrEventType, Value: []byte(env.Type)},
		kafkago.Header{Key: hdrAggregateType, Value: []byte(env.AggregateType)},
		kafkago.Header{Key: hdrAggregateID, Value: []byte(env.AggregateID)},
		kafkago.Header{Key: hdrVersion, Value: strconv.AppendInt(nil, env.Version, 10)},
		kafkago.Header{Key: hdrContentType, Value: []byte(contentTypeJSON)},
	)
	if tp := env.Metadata.TraceParent; tp != "" {
		h = append(h, kafkago.Header{Key: hdrTraceParent, Value: []byte(tp)})
	}
	if ts := env.Metadata.TraceState; ts != "" {
		h = append(h, kafkago.Header{Key: hdrTraceState, Value: []byte(ts)})
	}
	return h
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
