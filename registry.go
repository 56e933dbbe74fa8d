package eventsource

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
)

// Registry maps event type names to Go types, so that bytes read from a store
// or a broker decode into the struct that was written. It is safe for
// concurrent use; register every type before the first decode.
type Registry struct {
	mu        sync.RWMutex
	types     map[string]registration
	validator func(string) error

	// Schema evolution (upcast.go). upcasters[name][v] turns version v of
	// name's payload into version v+1; aliases maps a former type name to
	// the current one. hasAliases lets Canonical skip the lock on the hot
	// path of a consumer whose registry renames nothing.
	upcasters  map[string]map[int]Upcaster
	aliases    map[string]string
	hasAliases atomic.Bool
}

type registration struct {
	name    string // the type name, shared by every envelope decoded as it
	goType  reflect.Type
	decode  func([]byte) (Event, error)
	current int // the schema version E reports (SchemaVersionOf), 1 by default
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{
		types:     make(map[string]registration),
		upcasters: make(map[string]map[int]Upcaster),
		aliases:   make(map[string]string),
	}
}

// SetNameValidator installs a check that every type name must pass at
// registration, for transports whose routing reserves characters (AMQP topic
// keys, say). Names already registered are checked too.
func (r *Registry) SetNameValidator(validate func(name string) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range r.types {
		if err := validate(name); err != nil {
			return err
		}
	}
	r.validator = validate
	return nil
}

// Register adds E under the name its zero value reports. E may be a struct
// or a pointer to one; decoding yields the same kind. Registering the same
// type twice is a no-op; registering another type under a taken name, or an
// empty name, is an error.
func Register[E Event](r *Registry) error {
	name, err := TypeNameOf[E]()
	if err != nil {
		return err
	}
	goType := reflect.TypeFor[E]()
	var decode func([]byte) (Event, error)
	if goType.Kind() == reflect.Pointer {
		elem := goType.Elem()
		decode = func(data []byte) (Event, error) {
			v := reflect.New(elem)
			if err := json.Unmarshal(data, v.Interface()); err != nil {
				return nil, err
			}
			return v.Interface().(Event), nil
		}
	} else {
		decode = func(data []byte) (Event, error) {
			var e E
			if err := json.Unmarshal(data, &e); err != nil {
				return nil, err
			}
			return e, nil
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.types[name]; ok {
		if prev.goType == goType {
			return nil
		}
		return fmt.Errorf("%w: type name %q is registered for %v, cannot register %v",
			ErrInvalidEvent, name, prev.goType, goType)
	}
	if r.validator != nil {
		if err := r.validator(name); err != nil {
			return err
		}
	}
	if _, ok := r.aliases[name]; ok {
		return fmt.Errorf("%w: type name %q is registered as a former name of %q", ErrInvalidEvent, name, r.aliases[name])
	}
	current := schemaVersionOfType(goType)
	if err := r.checkChain(name, current); err != nil {
		return err
	}
	r.types[name] = registration{name: name, goType: goType, decode: decode, current: current}
	return nil
}

// MustRegister is Register for program setup: it panics on error.
func MustRegister[E Event](r *Registry) {
	if err := Register[E](r); err != nil {
		panic(err)
	}
}

// typeName asks a zero value for its name; a method that dereferences a nil
// pointer receiver is reported as an error rather than a crash.
func typeName(e Event) (name string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: EventType() on the zero value of %T panicked: %v", ErrInvalidEvent, e, p)
		}
	}()
	if isNilPointer(e) {
		// Give a pointer-receiver method a real zero struct to read from.
		e = reflect.New(reflect.TypeOf(e).Elem()).Interface().(Event)
	}
	name = e.EventType()
	if name == "" {
		return "", fmt.Errorf("%w: %T has an empty type name", ErrInvalidEvent, e)
	}
	return name, nil
}

func isNilPointer(e Event) bool {
	v := reflect.ValueOf(e)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// Decode turns a payload into the registered Go type for typeName. Unknown
// names and bytes that do not decode return a *DecodeError; it never panics.
// The payload is taken to be at schema version 1, as every payload written
// without a version is; use DecodeVersion for one that carries a version.
func (r *Registry) Decode(typeName string, data []byte) (Event, error) {
	e, _, err := r.DecodeVersion(typeName, 1, data)
	return e, err
}

// Has reports whether typeName is registered (a former name declared with
// RegisterRename is not: no event is written under it any more).
func (r *Registry) Has(typeName string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.types[typeName]
	return ok
}

// Types returns the registered names, sorted.
func (r *Registry) Types() []string {
	r.mu.RLock()
	names := make([]string, 0, len(r.types))
	for name := range r.types {
		names = append(names, name)
	}
	r.mu.RUnlock()
	slices.Sort(names)
	return names
}

// TypeNameOf returns the type name that E's zero value reports, the name
// Register files it under. Typed subscriptions use it.
func TypeNameOf[E Event]() (string, error) {
	var zero E
	return typeName(zero)
}
