package eventsource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"

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
// "schema_version".
func (c JSONCodec) Marshal(env Envelope) ([]byte, error) {
	data, err := MarshalEvent(env.Event)
	if err != nil {
		return nil, err
	}
	typ := env.Type
	if typ == "" {
		typ = env.Event.EventType()
	}
	return appendEnvelope(make([]byte, 0, len(data)+256), &env, typ, SchemaVersionOf(env.Event), data)
}

// Unmarshal decodes bytes written by Marshal, or by another service that
// follows the wire format. A payload at an older "schema_version" is
// upcast to the current one, and a former type name is read as the
// current one (see Registry.DecodeVersion). Bytes that are not such an
// envelope return a *DecodeError matching ErrMalformed; an unregistered
// type, one matching ErrUnknownEventType; a version the code cannot read,
// one matching ErrUnknownSchemaVersion.
func (c JSONCodec) Unmarshal(b []byte) (Envelope, error) {
	w, err := readWire(b)
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
	env := Envelope{
		ID:            id,
		Type:          w.typ,
		AggregateType: w.aggregateType,
		AggregateID:   w.aggregateID,
		Version:       w.version,
		Position:      w.position,
	}
	if w.occurredAt != nil {
		if err := env.OccurredAt.UnmarshalJSON(w.occurredAt); err != nil {
			return Envelope{}, &DecodeError{Type: w.typ, Kind: ErrMalformed, Cause: fmt.Errorf(`field "occurred_at": %w`, err)}
		}
	}
	if w.metadata != nil {
		if err := json.Unmarshal(w.metadata, &env.Metadata); err != nil {
			return Envelope{}, &DecodeError{Type: w.typ, Kind: ErrMalformed, Cause: fmt.Errorf(`field "metadata": %w`, err)}
		}
	}
	if len(bytes.TrimSpace(w.data)) == 0 {
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

// MarshalEvent encodes a payload on its own, as stores keep it.
func MarshalEvent(e Event) ([]byte, error) {
	if e == nil {
		return nil, fmt.Errorf("%w: nil event", ErrInvalidEvent)
	}
	data, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("%w: encode %s: %v", ErrInvalidEvent, e.EventType(), err)
	}
	return data, nil
}
