package eventsource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/google/uuid"
)

// Codec turns envelopes into bytes and back. Stores and buses use it for the
// whole envelope; the payload alone is encoded with MarshalEvent.
type Codec interface {
	Marshal(Envelope) ([]byte, error)
	Unmarshal([]byte) (Envelope, error)
}

// JSONCodec is the default codec. Decoding needs the registry to turn the
// "data" field into the right Go type.
type JSONCodec struct {
	Registry *Registry
}

// NewJSONCodec returns a JSON codec that decodes payloads with r.
func NewJSONCodec(r *Registry) JSONCodec { return JSONCodec{Registry: r} }

// Marshal encodes env in the wire format; the payload goes under "data",
// and its schema version (SchemaVersionOf), when above 1, under
// "schema_version". An OccurredAt that RFC 3339 cannot carry (a year
// outside 0 to 9999, say) is an error matching ErrInvalidEvent.
func (c JSONCodec) Marshal(env Envelope) ([]byte, error) {
	if env.Event == nil {
		return nil, fmt.Errorf("%w: nil event", ErrInvalidEvent)
	}
	typ := env.Type
	if typ == "" {
		typ = env.Event.EventType()
	}
	// The envelope and the payload are written into one pooled buffer and
	// copied out once: encoding/json's Marshal would allocate and copy
	// the payload on its own first.
	w := encodeBuffers.Get().(*encodeBuffer)
	defer w.release()
	var err error
	if w.b, err = appendEnvelopeHead(w.b[:0], &env, typ, SchemaVersionOf(env.Event)); err != nil {
		return nil, err
	}
	if raw, ok := env.Event.(RawEvent); ok {
		// Stored bytes, already encoded: written as they are.
		data, err := MarshalEvent(raw)
		if err != nil {
			return nil, err
		}
		w.b = append(append(w.b, data...), '}')
		return bytes.Clone(w.b), nil
	}
	if err := w.enc.Encode(env.Event); err != nil {
		return nil, fmt.Errorf("%w: encode %s: %v", ErrInvalidEvent, env.Event.EventType(), err)
	}
	w.b[len(w.b)-1] = '}' // over the newline Encode ends with
	return bytes.Clone(w.b), nil
}

// encodeBuffer is a buffer with a json.Encoder that appends to it.
type encodeBuffer struct {
	b   []byte
	enc *json.Encoder
}

func (w *encodeBuffer) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// release returns w to the pool, unless one large event grew it.
func (w *encodeBuffer) release() {
	if cap(w.b) <= 64<<10 {
		encodeBuffers.Put(w)
	}
}

// encodeBuffers reuses the encoding buffers across Marshal calls, as
// encoding/json reuses its own.
var encodeBuffers = sync.Pool{New: func() any {
	w := &encodeBuffer{b: make([]byte, 0, 1024)}
	w.enc = json.NewEncoder(w)
	return w
}}

// Unmarshal decodes bytes written by Marshal, or by another service that
// follows the wire format. A payload at an older "schema_version" is
// upcast to the current one, and a former type name is read as the
// current one (see Registry.DecodeVersion). Bytes that are not such an
// envelope return a *DecodeError matching ErrMalformed; an unregistered
// type, one matching ErrUnknownEventType; a version the code cannot read,
// one matching ErrUnknownSchemaVersion.
func (c JSONCodec) Unmarshal(b []byte) (Envelope, error) {
	var env Envelope // readWire sets OccurredAt and Metadata
	w, err := readWire(b, &env)
	if err != nil {
		return Envelope{}, &DecodeError{Type: w.typ, Kind: ErrMalformed, Cause: err}
	}
	if w.typ == "" {
		return Envelope{}, &DecodeError{Kind: ErrMalformed, Cause: errors.New(`missing "type"`)}
	}
	id, err := uuid.Parse(w.id)
	if err != nil {
		return Envelope{}, &DecodeError{Type: w.typ, Kind: ErrMalformed, Cause: fmt.Errorf(`field "id": %w`, err)}
	}
	env.ID = id
	env.AggregateType, env.AggregateID = w.aggregateType, w.aggregateID
	env.Version, env.Position = w.version, w.position
	// null is no payload either: decoded, it would be a zero event (or a
	// nil one, for a pointer type) that no producer sent.
	if d := bytes.TrimSpace(w.data); len(d) == 0 || string(d) == "null" {
		return Envelope{}, &DecodeError{Type: w.typ, Kind: ErrMalformed, Cause: errors.New(`missing "data"`)}
	}
	if c.Registry == nil {
		return Envelope{}, &DecodeError{Type: w.typ, Kind: ErrUnknownEventType, Cause: errors.New("codec has no registry")}
	}
	// A version past int32 is as unknown as any other too-new one.
	sv := int(min(w.schemaVersion, math.MaxInt32))
	if env.Event, env.Type, err = c.Registry.DecodeVersion(w.typ, sv, w.data); err != nil {
		return Envelope{}, err
	}
	return env, nil
}

// MarshalEvent encodes a payload on its own, as stores keep it. A
// RawEvent's payload is returned as it is, not encoded again (nor
// checked, beyond being there): it is what a store or MarshalEvent wrote.
func MarshalEvent(e Event) ([]byte, error) {
	if e == nil {
		return nil, fmt.Errorf("%w: nil event", ErrInvalidEvent)
	}
	if raw, ok := e.(RawEvent); ok {
		if len(raw.JSON) == 0 {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidEvent, raw.Name, errEmptyRaw)
		}
		return raw.JSON, nil
	}
	data, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("%w: encode %s: %v", ErrInvalidEvent, e.EventType(), err)
	}
	return data, nil
}
