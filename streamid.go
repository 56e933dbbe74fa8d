package eventsource

import (
	"fmt"
	"strings"
)

// StreamID is the name of an aggregate's stream in a store: the aggregate
// type and ID joined by a dash, e.g. "Order-42".
//
// Stream IDs are unambiguous: no two (type, ID) pairs share one, and
// ParseStreamID recovers the pair. Joining alone would not do that
// ("Order-Item", "42" and "Order", "Item-42" both spell "Order-Item-42"),
// so within the type, and only there, '-' is written "%2D" and '%' (the
// escape character) "%25". The first dash of a stream ID is then always the
// separator, and the ID after it is kept verbatim, dashes (UUIDs) included.
//
// Existing data stays readable: a type without '-' or '%' (every type name
// that is a Go identifier, such as "Order") needs no escape, so its streams
// keep exactly the IDs that the earlier plain join gave them. Only streams
// of types containing '-' or '%' are named differently; with '-' they were
// ambiguous, and such a store needs its stream IDs rewritten once, from
// type+"-"+ID to StreamID(type, ID).
func StreamID(aggregateType, aggregateID string) string {
	if !strings.ContainsAny(aggregateType, "-%") {
		return aggregateType + "-" + aggregateID
	}
	var b strings.Builder
	b.Grow(len(aggregateType) + 2*strings.Count(aggregateType, "-") + 2*strings.Count(aggregateType, "%") + 1 + len(aggregateID))
	for i := range len(aggregateType) {
		switch c := aggregateType[i]; c {
		case '-':
			b.WriteString("%2D")
		case '%':
			b.WriteString("%25")
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('-')
	b.WriteString(aggregateID)
	return b.String()
}

// ParseStreamID returns the aggregate type and ID that StreamID joined into
// streamID. A string that StreamID cannot have produced (no dash, or an
// escape other than "%2D" and "%25" in the type) returns an error matching
// ErrInvalidStreamID; accepting only those keeps each pair to one stream ID.
func ParseStreamID(streamID string) (aggregateType, aggregateID string, err error) {
	escaped, aggregateID, ok := strings.Cut(streamID, "-")
	if !ok {
		return "", "", fmt.Errorf("%w %q: no '-' between aggregate type and ID", ErrInvalidStreamID, streamID)
	}
	if !strings.Contains(escaped, "%") {
		return escaped, aggregateID, nil
	}
	var b strings.Builder
	b.Grow(len(escaped))
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		switch escaped[i+1 : min(i+3, len(escaped))] {
		case "2D":
			b.WriteByte('-')
		case "25":
			b.WriteByte('%')
		default:
			return "", "", fmt.Errorf("%w %q: bad escape at byte %d of the aggregate type", ErrInvalidStreamID, streamID, i)
		}
		i += 2
	}
	return b.String(), aggregateID, nil
}
