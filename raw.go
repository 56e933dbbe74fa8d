package eventsource

import "errors"

// RawEvent is an event as a store keeps it: its type name, the schema
// version it was written at and its JSON payload, not decoded into a Go
// type. A store hands RawEvents to code that forwards events without
// looking inside them (the outbox relay, through eventstore.RawReader):
// MarshalEvent and JSONCodec.Marshal write JSON as it is, under the stored
// type name and schema version, so a consumer of the wire format decodes,
// upcasts and resolves a renamed type as it does for any other publisher.
// Handlers on a broker bus therefore never see a RawEvent. The in-process
// bus does not encode, so it must be given decoded events instead.
//
// The field is named Schema, not SchemaVersion, because RawEvent has the
// SchemaVersion method.
type RawEvent struct {
	Name   string // the type name it was stored under
	Schema int    // the schema version it was written at; 0 and 1 both mean version 1
	JSON   []byte // the payload, as MarshalEvent wrote it
}

// EventType implements Event.
func (e RawEvent) EventType() string { return e.Name }

// SchemaVersion implements SchemaVersioned with the stored version, so
// that SchemaVersionOf reports what the payload was written at.
func (e RawEvent) SchemaVersion() int { return e.Schema }

// MarshalJSON returns the payload as it is, so that a codec built on
// encoding/json writes the stored bytes too.
func (e RawEvent) MarshalJSON() ([]byte, error) {
	if len(e.JSON) == 0 {
		return nil, errEmptyRaw
	}
	return e.JSON, nil
}

var errEmptyRaw = errors.New("raw event without a payload")
