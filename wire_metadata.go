package eventsource

import (
	"fmt"
)

// readMetadata decodes the envelope's "metadata" object as json.Unmarshal
// into a Metadata would (keys matched without regard to case, null for
// absent, unknown keys skipped, the last of a repeated key kept), without
// its reflection: every consumed event that carries a correlation ID or a
// trace context goes through it.
func readMetadata(b []byte, md *Metadata) error {
	r := wireReader{b: b}
	r.ws()
	if r.literalNull() {
		return r.end()
	}
	if err := r.metadata(md, 0); err != nil {
		return err
	}
	return r.end()
}

// metadata reads a metadata object into md, merging it with what md
// holds; depth is the number of arrays and objects around it.
func (r *wireReader) metadata(md *Metadata, depth int) error {
	return r.members(func(key []byte) error {
		var err error
		switch {
		case matchKey(key, "correlation_id"):
			err = r.nullableStrInto(&md.CorrelationID)
		case matchKey(key, "causation_id"):
			err = r.nullableStrInto(&md.CausationID)
		case matchKey(key, "tenant_id"):
			err = r.nullableStrInto(&md.TenantID)
		case matchKey(key, "traceparent"):
			err = r.nullableStrInto(&md.TraceParent)
		case matchKey(key, "tracestate"):
			err = r.nullableStrInto(&md.TraceState)
		case matchKey(key, "extra"):
			err = r.stringMap(&md.Extra)
		default:
			_, err = r.value(depth + 1)
		}
		return err
	})
}

// object reads a JSON object, calling field with the reader at each
// key's value, then checks that nothing follows it.
func (r *wireReader) object(field func(key []byte) error) error {
	if err := r.members(field); err != nil {
		return err
	}
	return r.end()
}

// members reads a JSON object's members, calling field with the reader
// at each key's value.
func (r *wireReader) members(field func(key []byte) error) error {
	r.ws()
	if !r.consume('{') {
		return fmt.Errorf("%w: not a JSON object", errSyntax)
	}
	r.ws()
	if r.consume('}') {
		return nil
	}
	for {
		r.ws()
		key, err := r.strBytes()
		if err != nil {
			return err
		}
		r.ws()
		if !r.consume(':') {
			return fmt.Errorf("%w: expected ':' after key %q", errSyntax, key)
		}
		r.ws()
		if err := field(key); err != nil {
			return err
		}
		r.ws()
		if r.consume(',') {
			continue
		}
		if r.consume('}') {
			return nil
		}
		return fmt.Errorf("%w: expected ',' or '}' at offset %d", errSyntax, r.i)
	}
}

// nullableStrInto sets *dst to a JSON string, and leaves it for null.
func (r *wireReader) nullableStrInto(dst *string) error {
	if r.literalNull() {
		return nil
	}
	s, err := r.str()
	if err != nil {
		return err
	}
	*dst = s
	return nil
}

// stringMap reads a JSON object of strings into *m (made when needed), or
// null, which sets *m to nil.
func (r *wireReader) stringMap(m *map[string]string) error {
	if r.literalNull() {
		*m = nil
		return nil
	}
	if *m == nil {
		*m = map[string]string{}
	}
	return r.members(func(key []byte) error {
		k := string(key)
		if r.literalNull() {
			(*m)[k] = ""
			return nil
		}
		v, err := r.str()
		if err != nil {
			return fmt.Errorf("extra %q: %w", k, err)
		}
		(*m)[k] = v
		return nil
	})
}

// MarshalJSON writes m as its struct tags say (empty fields omitted,
// Extra's keys sorted), byte for byte what encoding/json's reflection
// writes, without it: stores, sagas and codecs encode metadata per event.
func (m Metadata) MarshalJSON() ([]byte, error) { return appendMetadata(nil, &m), nil }

// UnmarshalJSON decodes what json.Unmarshal would decode into m by
// reflection (see readMetadata), without it.
func (m *Metadata) UnmarshalJSON(b []byte) error { return readMetadata(b, m) }
