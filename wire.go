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
// never changed shape keep the bytes they always had. An occurred_at that
// RFC 3339 cannot carry is an error, as it is for encoding/json: written,
// it would make bytes that no consumer can decode.
func appendEnvelopeHead(buf []byte, env *Envelope, typ string, schemaVersion int) ([]byte, error) {
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
	buf, err := env.OccurredAt.AppendText(buf) // RFC 3339 with nanoseconds, checked
	if err != nil {
		return buf, fmt.Errorf("%w: occurred_at: %v", ErrInvalidEvent, err)
	}
	buf = append(buf, '"')
	if !env.Metadata.IsZero() {
		buf = append(buf, `,"metadata":`...)
		buf = appendMetadata(buf, &env.Metadata)
	}
	return append(buf, `,"data":`...), nil
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
// unknown keys ignored, a repeated key decoded again into the same field,
// so that the last wins except over null, which leaves a field as it was)
// and rejects the rest, nesting deeper than encoding/json's limit included.
type wireReader struct {
	b []byte
	i int
}

type wireFields struct {
	id, typ, aggregateType, aggregateID string
	version, position, schemaVersion    int64
	data                                []byte // raw JSON; nil when absent
}

// readWire reads the envelope in b. With env, "occurred_at" and
// "metadata" are decoded into it where they are met, as encoding/json
// decodes each occurrence of a repeated key (an invalid first one fails
// the envelope; metadata objects merge); without (EnvelopeType), they are
// only checked to be JSON.
func readWire(b []byte, env *Envelope) (wireFields, error) {
	var f wireFields
	r := wireReader{b: b}
	err := r.object(func(key []byte) error { return r.field(&f, env, key) })
	return f, err
}

// field reads the value of an envelope key; the envelope is the one
// enclosing object, so its values are at depth 1.
func (r *wireReader) field(f *wireFields, env *Envelope, key []byte) error {
	var err error
	switch {
	case matchKey(key, "id"):
		err = r.nullableStrField(&f.id, "id")
	case matchKey(key, "type"):
		err = r.nullableStrField(&f.typ, "type")
	case matchKey(key, "aggregate_type"):
		err = r.nullableStrField(&f.aggregateType, "aggregate_type")
	case matchKey(key, "aggregate_id"):
		err = r.nullableStrField(&f.aggregateID, "aggregate_id")
	case matchKey(key, "occurred_at"):
		err = r.occurredAt(env)
	case matchKey(key, "version"):
		err = r.nullableIntField(&f.version, "version")
	case matchKey(key, "position"):
		err = r.nullableIntField(&f.position, "position")
	case matchKey(key, "metadata"):
		err = r.metadataField(env)
	case matchKey(key, "data"):
		f.data, err = r.value(1)
	case matchKey(key, "schema_version"): // after the keys every envelope has: they match first
		err = r.nullableIntField(&f.schemaVersion, "schema_version")
	default:
		_, err = r.value(1)
	}
	return err
}

// occurredAt reads "occurred_at" into env.OccurredAt (null leaves it);
// time.Time.UnmarshalJSON judges it, as encoding/json would.
func (r *wireReader) occurredAt(env *Envelope) error {
	v, err := r.value(1)
	if err != nil || env == nil {
		return err
	}
	if err := env.OccurredAt.UnmarshalJSON(v); err != nil {
		return fmt.Errorf(`field "occurred_at": %w`, err)
	}
	return nil
}

// metadataField reads "metadata" into env.Metadata as encoding/json reads
// it into the *Metadata of the wire struct: null clears it, an object is
// merged into what an earlier one set.
func (r *wireReader) metadataField(env *Envelope) error {
	if r.literalNull() {
		if env != nil {
			env.Metadata = Metadata{}
		}
		return nil
	}
	if env == nil {
		_, err := r.value(1)
		return err
	}
	if err := r.metadata(&env.Metadata, 1); err != nil {
		return fmt.Errorf(`field "metadata": %w`, err)
	}
	return nil
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

// nullableStrField sets *dst to a JSON string, and leaves it for null.
func (r *wireReader) nullableStrField(dst *string, key string) error {
	if err := r.nullableStrInto(dst); err != nil {
		return fmt.Errorf("field %q: %w", key, err)
	}
	return nil
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

// nullableIntField sets *dst to a JSON integer in int64's range, and
// leaves it for null.
func (r *wireReader) nullableIntField(dst *int64, key string) error {
	if r.literalNull() {
		return nil
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
		return fmt.Errorf("field %q: %w: not an integer at offset %d", key, errSyntax, start)
	}
	*dst = n
	return nil
}

// maxNesting is encoding/json's limit on nested arrays and objects,
// counted from the outermost.
const maxNesting = 10000

// value reads one JSON value, checking it as encoding/json's scanner
// does, and returns its bytes; depth is the number of arrays and objects
// around it. Nothing is copied: it costs one pass over the bytes.
func (r *wireReader) value(depth int) ([]byte, error) {
	start := r.i
	if err := r.skip(depth); err != nil {
		return nil, err
	}
	return r.b[start:r.i], nil
}

func (r *wireReader) skip(depth int) error {
	if r.i >= len(r.b) {
		return fmt.Errorf("%w: unexpected end of input", errSyntax)
	}
	switch c := r.b[r.i]; {
	case c == '"':
		return r.skipString()
	case c == '{' || c == '[':
		if depth >= maxNesting {
			return fmt.Errorf("%w: nested deeper than %d at offset %d", errSyntax, maxNesting, r.i)
		}
		end := byte(']')
		if c == '{' {
			end = '}'
		}
		r.i++
		r.ws()
		if r.consume(end) {
			return nil
		}
		for {
			if c == '{' {
				if err := r.skipString(); err != nil {
					return err
				}
				r.ws()
				if !r.consume(':') {
					return fmt.Errorf("%w: expected ':' at offset %d", errSyntax, r.i)
				}
				r.ws()
			}
			if err := r.skip(depth + 1); err != nil {
				return err
			}
			r.ws()
			if r.consume(',') {
				r.ws()
				continue
			}
			if r.consume(end) {
				return nil
			}
			return fmt.Errorf("%w: expected ',' or '%c' at offset %d", errSyntax, end, r.i)
		}
	case c == 't':
		return r.literal("true")
	case c == 'f':
		return r.literal("false")
	case c == 'n':
		return r.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return r.skipNumber()
	default:
		return fmt.Errorf("%w: unexpected %q at offset %d", errSyntax, c, r.i)
	}
}

func (r *wireReader) literal(lit string) error {
	if len(r.b)-r.i < len(lit) || string(r.b[r.i:r.i+len(lit)]) != lit {
		return fmt.Errorf("%w: expected %s at offset %d", errSyntax, lit, r.i)
	}
	r.i += len(lit)
	return nil
}

// skipNumber reads -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (r *wireReader) skipNumber() error {
	start := r.i
	r.consume('-')
	if !r.consume('0') && !r.digits() {
		return fmt.Errorf("%w: bad number at offset %d", errSyntax, start)
	}
	if r.consume('.') && !r.digits() {
		return fmt.Errorf("%w: bad number at offset %d", errSyntax, start)
	}
	if r.consume('e') || r.consume('E') {
		if !r.consume('+') {
			r.consume('-')
		}
		if !r.digits() {
			return fmt.Errorf("%w: bad number at offset %d", errSyntax, start)
		}
	}
	return nil
}

// digits reads [0-9]* and reports whether there was one.
func (r *wireReader) digits() bool {
	start := r.i
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		r.i++
	}
	return r.i > start
}

// skipString reads past a JSON string, checking its escapes but decoding
// nothing. Bytes that are not UTF-8 are valid JSON, as for encoding/json.
func (r *wireReader) skipString() error {
	if !r.consume('"') {
		return fmt.Errorf("%w: expected a string at offset %d", errSyntax, r.i)
	}
	for r.i < len(r.b) {
		switch c := r.b[r.i]; {
		case c == '"':
			r.i++
			return nil
		case c == '\\':
			if r.i+1 >= len(r.b) {
				return fmt.Errorf("%w: unterminated string", errSyntax)
			}
			switch r.b[r.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				r.i += 2
			case 'u':
				if len(r.b)-r.i < 6 || !isHex4(r.b[r.i+2:r.i+6]) {
					return fmt.Errorf("%w: bad \\u escape at offset %d", errSyntax, r.i)
				}
				r.i += 6
			default:
				return fmt.Errorf("%w: bad escape at offset %d", errSyntax, r.i)
			}
		case c < 0x20:
			return fmt.Errorf("%w: control character in string at offset %d", errSyntax, r.i)
		default:
			r.i++
		}
	}
	return fmt.Errorf("%w: unterminated string", errSyntax)
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
