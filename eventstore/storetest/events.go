package storetest

import "github.com/eventsource-go/eventsource"

// The suite's own event types. A store under test decodes them with the
// registry from NewRegistry (or one that RegisterEvents has filled).

// Deposited is the suite's common event.
type Deposited struct {
	Amount int `json:"amount"`
}

// EventType implements eventsource.Event.
func (Deposited) EventType() string { return "storetest.Deposited" }

// Withdrawn has a second field, to tell payloads of different types apart.
type Withdrawn struct {
	Amount int    `json:"amount"`
	Note   string `json:"note,omitempty"`
}

// EventType implements eventsource.Event.
func (Withdrawn) EventType() string { return "storetest.Withdrawn" }

// Renamed is registered as a pointer type and has nested and repeated
// fields, so the round trip covers more than flat structs.
type Renamed struct {
	Name  string            `json:"name"`
	Tags  []string          `json:"tags"`
	Attrs map[string]string `json:"attrs,omitempty"`
	Owner struct {
		ID    int64 `json:"id"`
		Admin bool  `json:"admin"`
	} `json:"owner"`
}

// EventType implements eventsource.Event.
func (*Renamed) EventType() string { return "storetest.Renamed" }

// RegisterEvents adds the suite's event types to r.
func RegisterEvents(r *eventsource.Registry) error {
	if err := eventsource.Register[Deposited](r); err != nil {
		return err
	}
	if err := eventsource.Register[Withdrawn](r); err != nil {
		return err
	}
	if err := eventsource.Register[*Renamed](r); err != nil {
		return err
	}
	return RegisterUpcasting(r)
}

// NewRegistry returns a registry that knows the suite's event types, for
// stores that decode payloads.
func NewRegistry() *eventsource.Registry {
	r := eventsource.NewRegistry()
	if err := RegisterEvents(r); err != nil {
		panic(err) // the suite's own types: a failure here is a bug in this file
	}
	return r
}
