package eventsource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Codec turns envelopes into bytes and back. Stores and buses use it for the
// whole envelope; the payload alone is encoded with MarshalEvent.
type Codec interface {
	Marshal(Envelope) ([]byte, error)
	Unmarshal([]byte) (Envelope, error)
}

// wireEnvelope is the JSON wire format documented in the README. Field names
// are part of the contract with services written in other languages.
type wireEnvelope struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	AggregateType string          `json:"aggregate_type"`
	AggregateID   string          `json:"aggregate_id"`
	Version       int64           `json:"version"`
	Position      int64           `json:"position,omitempty"`
	OccurredAt    time.Time       `json:"occurred_at"`
	Metadata      *Metadata       `json:"metadata,omitempty"`
	Data          json.RawMessage `json:"data"`
}

// JSONCodec is the default codec. Decoding needs the registry to turn the
// "data" field into the right Go type.
type JSONCodec struct {
	Registry *Registry
}

// NewJSONCodec returns a JSON codec that decodes payloads with r.
func NewJSONCodec(r *Registry) JSONCodec { return JSONCodec{Registry: r} }

// Marshal encodes env; the payload goes under "data".
func (c JSONCodec) Marshal(env Envelope) ([]byte, error) {
	data, err := MarshalEvent(env.Event)
	if err != nil {
		return nil, err
	}
	w := wireEnvelope{
		ID:            env.ID.String(),
		Type:          env.Type,
		AggregateType: env.AggregateType,
		AggregateID:   env.AggregateID,
		Version:       env.Version,
		Position:      env.Position,
		OccurredAt:    env.OccurredAt,
		Data:          data,
	}
	if w.Type == "" {
		w.Type = env.Event.EventType()
	}
	if !env.Metadata.IsZero() {
		w.Metadata = &env.Metadata
	}
	return json.Marshal(w)
}

// Unmarshal decodes bytes written by Marshal, or by another service that
// follows the wire format. Bytes that are not such an envelope return a
// *DecodeError matching ErrMalformed; an unregistered type, one matching
// ErrUnknownEventType.
func (c JSONCodec) Unmarshal(b []byte) (Envelope, error) {
	var w wireEnvelope
	if err := json.Unmarshal(b, &w); err != nil {
		return Envelope{}, &DecodeError{Kind: ErrMalformed, Cause: err}
	}
	if w.Type == "" {
		return Envelope{}, &DecodeError{Kind: ErrMalformed, Cause: errors.New(`missing "type"`)}
	}
	id, err := uuid.Parse(w.ID)
	if err != nil {
		return Envelope{}, &DecodeError{Type: w.Type, Kind: ErrMalformed, Cause: fmt.Errorf(`field "id": %w`, err)}
	}
	if len(bytes.TrimSpace(w.Data)) == 0 {
		return Envelope{}, &DecodeError{Type: w.Type, Kind: ErrMalformed, Cause: errors.New(`missing "data"`)}
	}
	if c.Registry == nil {
		return Envelope{}, &DecodeError{Type: w.Type, Kind: ErrUnknownEventType, Cause: errors.New("codec has no registry")}
	}
	event, err := c.Registry.Decode(w.Type, w.Data)
	if err != nil {
		return Envelope{}, err
	}
	env := Envelope{
		ID:            id,
		Type:          w.Type,
		AggregateType: w.AggregateType,
		AggregateID:   w.AggregateID,
		Version:       w.Version,
		Position:      w.Position,
		OccurredAt:    w.OccurredAt,
		Event:         event,
	}
	if w.Metadata != nil {
		env.Metadata = *w.Metadata
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
