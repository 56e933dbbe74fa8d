package eventsource

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sync"
)

// Registry maps event type names to Go types, so that bytes read from a store
// or a broker decode into the struct that was written. It is safe for
// concurrent use; register every type before the first decode.
type Registry struct {
	mu        sync.RWMutex
	types     map[string]registration
	validator func(string) error
}

type registration struct {
	goType reflect.Type
	decode func([]byte) (Event, error)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{types: make(map[string]registration)}
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
	r.types[name] = registration{goType: goType, decode: decode}
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
func (r *Registry) Decode(typeName string, data []byte) (Event, error) {
	r.mu.RLock()
	reg, ok := r.types[typeName]
	r.mu.RUnlock()
	if !ok {
		return nil, &DecodeError{Type: typeName, Kind: ErrUnknownEventType}
	}
	e, err := reg.decode(data)
	if err != nil {
		return nil, &DecodeError{Type: typeName, Kind: ErrMalformed, Cause: err}
	}
	return e, nil
}

// Has reports whether typeName is registered.
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
