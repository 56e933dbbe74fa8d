package eventsource

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Schema evolution.
//
// An event type's payload may change shape over the years while its old
// events stay in stores and on brokers. The registry reads them through
// upcasters: small functions over the raw JSON payload, each turning
// version v into version v+1, chained from the version an event was
// written at up to the one the code declares (SchemaVersioned). A type
// that was renamed keeps reading under its former name (RegisterRename).
//
// Why raw payloads rather than typed old-to-new functions: the point is
// that the domain code keeps only the current struct. A typed step needs
// a Go type for every old shape, forever; a raw step needs none, works
// for a type that no longer exists at all (a rename, a split) and costs
// one JSON transform. When an old shape is worth a struct, TypedUpcaster
// builds a raw step from a typed function, so both styles share one chain.

// ErrUnknownSchemaVersion: an event written at a schema version the code
// cannot read: newer than the type's current version (written by a newer
// release), or older with no chain of upcasters up to the current one. It
// is the Kind of a *DecodeError.
var ErrUnknownSchemaVersion = errors.New("eventsource: unknown schema version")

// SchemaVersioned is implemented by an event type whose payload has
// changed shape: SchemaVersion returns the version of the current shape
// (2 after the first change). It must not depend on the value. Types
// without it are at version 1. Every event is written with its version,
// and Register checks that the type's upcasters lead up to it.
type SchemaVersioned interface {
	SchemaVersion() int
}

// SchemaVersionOf returns the schema version e is written at: its
// SchemaVersion, or 1.
func SchemaVersionOf(e Event) int {
	if v, ok := e.(SchemaVersioned); ok {
		if n := v.SchemaVersion(); n > 1 {
			return n
		}
	}
	return 1
}

// schemaVersionOfType asks a zero value of t, which implements Event.
func schemaVersionOfType(t reflect.Type) (n int) {
	defer func() {
		if recover() != nil {
			n = 1 // a method that needs a real value is caught at Marshal time
		}
	}()
	var zero any
	if t.Kind() == reflect.Pointer {
		zero = reflect.New(t.Elem()).Interface()
	} else {
		zero = reflect.Zero(t).Interface()
	}
	e, _ := zero.(Event)
	if e == nil {
		return 1
	}
	return SchemaVersionOf(e)
}

// Upcaster turns the JSON payload of one schema version into the JSON of
// the next. It may return data itself, changed in place.
type Upcaster func(data []byte) ([]byte, error)

// TypedUpcaster makes an Upcaster from a function over the structs of two
// consecutive shapes: the payload is decoded into Old with encoding/json,
// and fn's result is encoded as the next version's payload.
func TypedUpcaster[Old, New any](fn func(Old) (New, error)) Upcaster {
	return func(data []byte) ([]byte, error) {
		var old Old
		if err := json.Unmarshal(data, &old); err != nil {
			return nil, err
		}
		next, err := fn(old)
		if err != nil {
			return nil, err
		}
		return json.Marshal(next)
	}
}

// RegisterUpcaster declares how version fromVersion of typeName's payload
// becomes version fromVersion+1. typeName is the current name (a type
// keeps its version numbers across a rename). Register the steps from 1 up
// to the type's current version before the first decode; a step at or
// beyond the current version, a duplicate, or one for a former name is an
// error matching ErrInvalidEvent.
func (r *Registry) RegisterUpcaster(typeName string, fromVersion int, up Upcaster) error {
	if typeName == "" || fromVersion < 1 || up == nil {
		return fmt.Errorf("%w: RegisterUpcaster(%q, %d) needs a type name, a version from 1 and a function",
			ErrInvalidEvent, typeName, fromVersion)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if to, ok := r.aliases[typeName]; ok {
		return fmt.Errorf("%w: %q is a former name of %q; register its upcasters under the current name",
			ErrInvalidEvent, typeName, to)
	}
	if reg, ok := r.types[typeName]; ok && fromVersion >= reg.current {
		return fmt.Errorf("%w: %q is at schema version %d; an upcaster from version %d leads past it (is SchemaVersion missing?)",
			ErrInvalidEvent, typeName, reg.current, fromVersion)
	}
	chain := r.upcasters[typeName]
	if chain == nil {
		chain = make(map[int]Upcaster)
		r.upcasters[typeName] = chain
	}
	if _, dup := chain[fromVersion]; dup {
		return fmt.Errorf("%w: %q already has an upcaster from version %d", ErrInvalidEvent, typeName, fromVersion)
	}
	chain[fromVersion] = up
	return nil
}

// MustRegisterUpcaster is RegisterUpcaster for program setup: it panics
// on error.
func (r *Registry) MustRegisterUpcaster(typeName string, fromVersion int, up Upcaster) {
	if err := r.RegisterUpcaster(typeName, fromVersion, up); err != nil {
		panic(err)
	}
}

// checkChain refuses a current version that registered upcasters lead
// past; r.mu must be held.
func (r *Registry) checkChain(name string, current int) error {
	for from := range r.upcasters[name] {
		if from >= current {
			return fmt.Errorf("%w: %q has an upcaster from version %d but the type is at version %d (is SchemaVersion missing?)",
				ErrInvalidEvent, name, from, current)
		}
	}
	return nil
}

// RegisterRename declares that events stored under oldName are now read
// as newName: they decode into newName's Go type, through its upcasters
// (renaming and reshaping at once is a new schema version), and their
// envelopes carry newName. Handlers subscribe to newName only. oldName
// must not be a registered type; renaming twice (A to B, B to C) chains.
func (r *Registry) RegisterRename(oldName, newName string) error {
	if oldName == "" || newName == "" || oldName == newName {
		return fmt.Errorf("%w: RegisterRename(%q, %q) needs two different names", ErrInvalidEvent, oldName, newName)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.types[oldName]; ok {
		return fmt.Errorf("%w: %q is a registered type; it cannot also be a former name", ErrInvalidEvent, oldName)
	}
	if prev, ok := r.aliases[oldName]; ok {
		if prev == newName {
			return nil
		}
		return fmt.Errorf("%w: %q is already a former name of %q", ErrInvalidEvent, oldName, prev)
	}
	if r.resolve(newName) == oldName {
		return fmt.Errorf("%w: renaming %q to %q makes a cycle", ErrInvalidEvent, oldName, newName)
	}
	r.aliases[oldName] = newName
	r.hasAliases.Store(true)
	return nil
}

// resolve follows renames from name; r.mu must be held. The hop limit
// guards against a cycle, which RegisterRename refuses anyway.
func (r *Registry) resolve(name string) string {
	for range len(r.aliases) {
		to, ok := r.aliases[name]
		if !ok {
			break
		}
		name = to
	}
	return name
}

// Canonical returns the current name of typeName: the name it was renamed
// to (RegisterRename), or typeName itself. A consumer compares a
// transport's copy of the type with the decoded envelope's through it.
func (r *Registry) Canonical(typeName string) string {
	if !r.hasAliases.Load() {
		return typeName
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.resolve(typeName)
}

// SchemaVersion returns the current schema version of a registered type,
// or 0 if typeName is not registered.
func (r *Registry) SchemaVersion(typeName string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.types[r.resolve(typeName)].current
}

// DecodeVersion decodes a payload written as typeName at schemaVersion (0
// means 1, as for bytes written before versions existed), upcasting it to
// the current version first, and returns the event with its current type
// name. A type that is not registered is a *DecodeError matching
// ErrUnknownEventType; a version newer than the type's, or one that no
// chain of upcasters leads from, ErrUnknownSchemaVersion; bytes that do not
// decode, or an upcaster's error, ErrMalformed.
func (r *Registry) DecodeVersion(typeName string, schemaVersion int, data []byte) (Event, string, error) {
	r.mu.RLock()
	reg, ok := r.types[typeName]
	if !ok && len(r.aliases) > 0 {
		reg, ok = r.types[r.resolve(typeName)]
	}
	r.mu.RUnlock()
	if !ok {
		return nil, typeName, &DecodeError{Type: typeName, Kind: ErrUnknownEventType}
	}
	if schemaVersion == 0 {
		schemaVersion = 1
	}
	if schemaVersion != reg.current {
		var err error
		if data, err = r.upcast(&reg, schemaVersion, data); err != nil {
			return nil, reg.name, err
		}
	}
	e, err := recovered("decoding", reg.decode, data)
	if err != nil {
		return nil, reg.name, &DecodeError{Type: reg.name, Kind: ErrMalformed, Cause: err}
	}
	return e, reg.name, nil
}

// upcast runs the chain from version from up to reg's current version.
func (r *Registry) upcast(reg *registration, from int, data []byte) ([]byte, error) {
	switch {
	case from < 1:
		return nil, &DecodeError{Type: reg.name, Kind: ErrMalformed, Cause: fmt.Errorf("schema version %d", from)}
	case from > reg.current:
		return nil, &DecodeError{Type: reg.name, Kind: ErrUnknownSchemaVersion,
			Cause: fmt.Errorf("schema version %d is newer than this code's %d", from, reg.current)}
	}
	// The whole chain is collected, and so checked, before any step runs;
	// the steps slice grows with the steps found, so a type declaring a
	// version no chain reaches is a missing step, not an allocation sized
	// by that version.
	var steps []Upcaster
	r.mu.RLock()
	chain := r.upcasters[reg.name]
	for v := from; v < reg.current; v++ {
		up := chain[v]
		if up == nil {
			r.mu.RUnlock()
			return nil, &DecodeError{Type: reg.name, Kind: ErrUnknownSchemaVersion,
				Cause: fmt.Errorf("schema version %d: no upcaster from version %d to %d", from, v, v+1)}
		}
		steps = append(steps, up)
	}
	r.mu.RUnlock()
	for i, up := range steps {
		next, err := recovered("upcaster", up, data)
		if err != nil {
			return nil, &DecodeError{Type: reg.name, Kind: ErrMalformed,
				Cause: fmt.Errorf("upcast from schema version %d: %w", from+i, err)}
		}
		data = next
	}
	return data, nil
}

// recovered runs f on data, turning a panic in it (a user's upcaster, or
// an UnmarshalJSON that does not expect these bytes) into an error saying
// what panicked: decoding never panics, whatever the payload, or a
// consumer that crashed on an event would crash again on its redelivery.
func recovered[T any](what string, f func([]byte) (T, error), data []byte) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			var zero T
			v, err = zero, fmt.Errorf("%s panicked: %v", what, p)
		}
	}()
	return f(data)
}
