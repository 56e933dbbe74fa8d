package eventsource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/eventsource-go/eventsource/internal/uuidtext"
)

// The envelope's JSON is written and read by hand: every broker-backed bus
// and durable store encodes and decodes each event, and encoding/json's
// reflection over the envelope cost more than the rest of the consumer
// path together. Payloads still go through encoding/json, and so does
// metadata when it is read.

// appendEnvelopeHead writes the wire format's JSON object for env up to
// and including the "data" key; the encoded payload and '}' follow.
// schemaVersion is written only above 1, so that events of a type that
// never changed shape keep the bytes they always had.
func appendEnvelopeHead(buf []byte, env *Envelope, typ string, schemaVersion int) []byte {
	buf = append(buf, `{"id":"`...)
	buf = uuidtext.Append(buf, env.ID)
	buf = append(buf, `","type":`...)
	buf = appendString(buf, typ)
	if schemaVersion > 1 {
		buf = append(buf, `,"schema_version":`...)
		buf = strconv.AppendInt(buf, int64(schemaVersion), 10)
	}
	buf = append(buf, `,"aggregate_type":`...)
	buf = appendString(buf, env.AggregateType)
	buf = append(buf, `,"aggregate_id":`...)
	buf = appendString(buf, env.AggregateID)
	buf = append(buf, `,"version":`...)
	buf = strconv.AppendInt(buf, env.Version, 10)
	if env.Position != 0 {
		buf = append(buf, `,"position":`...)
		buf = strconv.AppendInt(buf, env.Position, 10)
	}
	buf = append(buf, `,"occurred_at":"`...)
	buf = env.OccurredAt.AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, '"')
	if !env.Metadata.IsZero() {
		buf = append(buf, `,"metadata":`...)
		buf = appendMetadata(buf, &env.Metadata)
	}
	return append(buf, `,"data":`...)
}

// appendMetadata writes m as encoding/json would (its struct tags, empty
// fields omitted, Extra's keys sorted), without reflection.
func appendMetadata(buf []byte, m *Metadata) []byte {
	buf = append(buf, '{')
	n := len(buf)
	buf = appendMember(buf, n, "correlation_id", m.CorrelationID)
	buf = appendMember(buf, n, "causation_id", m.CausationID)
	buf = appendMember(buf, n, "tenant_id", m.TenantID)
	buf = appendMember(buf, n, "traceparent", m.TraceParent)
	buf = appendMember(buf, n, "tracestate", m.TraceState)
	if len(m.Extra) > 0 {
		if len(buf) > n {
			buf = append(buf, ',')
		}
		buf = append(buf, `"extra":{`...)
		for i, k := range slices.Sorted(maps.Keys(m.Extra)) {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, k)
			buf = append(buf, ':')
			buf = appendString(buf, m.Extra[k])
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// appendMember writes "key":value unless value is empty, after a comma
// unless it is the object's first member (the object's members start at
// buf[start]). key needs no escaping.
func appendMember(buf []byte, start int, key, value string) []byte {
	if value == "" {
		return buf
	}
	if len(buf) > start {
		buf = append(buf, ',')
	}
	buf = append(buf, '"')
	buf = append(buf, key...)
	buf = append(buf, `":`...)
	return appendString(buf, value)
}

// appendString quotes s. Plain ASCII, the usual case, is copied as is;
// anything else goes through encoding/json's escaping.
func appendString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(buf, q...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

var errSyntax = errors.New("invalid JSON")

// wireReader reads the envelope object. It accepts what encoding/json
// would decode into the documented fields (keys matched case-insensitively,
// unknown keys ignored, the last of duplicate keys winning) and rejects
// the rest.
type wireReader struct {
	b []byte
	i int
}

type wireFields struct {
	id, typ, aggregateType, aggregateID string
	version, position, schemaVersion    int64
	occurredAt, metadata, data          []byte // raw JSON values; nil when absent
}

func readWire(b []byte) (wireFields, error) {
	var f wireFields
	r := wireReader{b: b}
	err := r.object(func(key []byte) error { return r.field(&f, key) })
	return f, err
}

func (r *wireReader) field(f *wireFields, key []byte) error {
	var err error
	switch {
	case matchKey(key, "id"):
		f.id, err = r.nullableStr("id")
	case matchKey(key, "type"):
		f.typ, err = r.nullableStr("type")
	case matchKey(key, "aggregate_type"):
		f.aggregateType, err = r.nullableStr("aggregate_type")
	case matchKey(key, "aggregate_id"):
		f.aggregateID, err = r.nullableStr("aggregate_id")
	case matchKey(key, "occurred_at"):
		f.occurredAt, err = r.raw() // time.Time.UnmarshalJSON judges it, as encoding/json would
	case matchKey(key, "version"):
		f.version, err = r.nullableInt("version")
	case matchKey(key, "position"):
		f.position, err = r.nullableInt("position")
	case matchKey(key, "metadata"):
		f.metadata, err = r.raw()
	case matchKey(key, "data"):
		f.data, err = r.raw()
	case matchKey(key, "schema_version"): // after the keys every envelope has: they match first
		f.schemaVersion, err = r.nullableInt("schema_version")
	default:
		err = r.skipValue(key)
	}
	return err
}

func matchKey(key []byte, name string) bool {
	return string(key) == name || bytes.EqualFold(key, []byte(name))
}

func (r *wireReader) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

func (r *wireReader) consume(c byte) bool {
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

func (r *wireReader) end() error {
	r.ws()
	if r.i != len(r.b) {
		return fmt.Errorf("%w: data after the object at offset %d", errSyntax, r.i)
	}
	return nil
}

func (r *wireReader) literalNull() bool {
	if len(r.b)-r.i >= 4 && string(r.b[r.i:r.i+4]) == "null" {
		r.i += 4
		return true
	}
	return false
}

func (r *wireReader) nullableStr(key string) (string, error) {
	if r.literalNull() {
		return "", nil
	}
	s, err := r.str()
	if err != nil {
		return "", fmt.Errorf("field %q: %w", key, err)
	}
	return s, nil
}

// str reads a JSON string.
func (r *wireReader) str() (string, error) {
	b, err := r.strBytes()
	return string(b), err
}

// strBytes reads a JSON string. Strings without escapes, the usual case,
// are sliced out of the input without copying.
func (r *wireReader) strBytes() ([]byte, error) {
	if !r.consume('"') {
		return nil, fmt.Errorf("%w: expected a string at offset %d", errSyntax, r.i)
	}
	start := r.i
	plain := true
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			raw := r.b[start:r.i]
			r.i++
			if plain && utf8.Valid(raw) {
				return raw, nil
			}
			var s string
			if err := json.Unmarshal(r.b[start-1:r.i], &s); err != nil {
				return nil, fmt.Errorf("%w: %v", errSyntax, err)
			}
			return []byte(s), nil
		case c == '\\':
			plain = false
			r.i += 2
		case c < 0x20:
			return nil, fmt.Errorf("%w: control character in string at offset %d", errSyntax, r.i)
		default:
			r.i++
		}
	}
	return nil, fmt.Errorf("%w: unterminated string", errSyntax)
}

func (r *wireReader) nullableInt(key string) (int64, error) {
	if r.literalNull() {
		return 0, nil
	}
	start := r.i
	if r.i < len(r.b) && r.b[r.i] == '-' {
		r.i++
	}
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		r.i++
	}
	n, err := strconv.ParseInt(string(r.b[start:r.i]), 10, 64)
	if err != nil || (r.i < len(r.b) && strings.IndexByte(".eE", r.b[r.i]) >= 0) ||
		(r.b[start] == '0' && r.i-start > 1) || (r.b[start] == '-' && r.i-start > 2 && r.b[start+1] == '0') {
		return 0, fmt.Errorf("field %q: %w: not an integer at offset %d", key, errSyntax, start)
	}
	return n, nil
}

// raw returns the next value's bytes, checking only that strings,
// objects and arrays are closed; encoding/json validates what is decoded.
func (r *wireReader) raw() ([]byte, error) {
	start := r.i
	depth := 0
	for r.i < len(r.b) {
		switch c := r.b[r.i]; c {
		case '"':
			// Skipped, not kept: strBytes copies nothing for a plain string.
			if _, err := r.strBytes(); err != nil {
				return nil, err
			}
			if depth == 0 {
				return r.b[start:r.i], nil
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return r.b[start:r.i], nil
			}
			depth--
			if depth == 0 {
				r.i++
				return r.b[start:r.i], nil
			}
		case ',':
			if depth == 0 {
				return r.b[start:r.i], nil
			}
		case ' ', '\t', '\n', '\r':
			if depth == 0 {
				return r.b[start:r.i], nil
			}
		}
		r.i++
	}
	if depth != 0 {
		return nil, fmt.Errorf("%w: unterminated value", errSyntax)
	}
	return r.b[start:r.i], nil
}
