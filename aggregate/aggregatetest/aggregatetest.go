// Package aggregatetest tests aggregates given/when/then: given past
// events, when a command, then these events, or this error. A failure
// shows the events wanted and raised as a diff, one event a line, as
// "Type {json}".
//
//	aggregatetest.For(t, newOrder).
//		Given(OrderPlaced{OrderID: "o1", TotalCents: 100}).
//		When(func(o *Order) error { return o.Ship("DHL") }).
//		Then(OrderShipped{OrderID: "o1", Carrier: "DHL"})
package aggregatetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/internal/testdiff"
)

// DefaultID is the ID of a scenario's aggregate unless WithID sets one.
const DefaultID = "test-1"

// Scenario is an aggregate under test.
type Scenario[A aggregate.Root] struct {
	t     testing.TB
	newA  func() A
	id    string
	given []eventsource.Event
}

// For starts a scenario for the aggregates newAggregate makes.
func For[A aggregate.Root](t testing.TB, newAggregate func() A) *Scenario[A] {
	return &Scenario[A]{t: t, newA: newAggregate, id: DefaultID}
}

// WithID sets the aggregate's ID.
func (s *Scenario[A]) WithID(id string) *Scenario[A] { s.id = id; return s }

// Given sets the aggregate's past: these events are replayed on it, in
// order, as if loaded from the store: each goes through its JSON form
// first, so an aggregate that relies on what JSON drops (unexported
// fields) fails here as it would in production.
func (s *Scenario[A]) Given(events ...eventsource.Event) *Scenario[A] {
	s.given = append(s.given, events...)
	return s
}

// When runs cmd on the aggregate rebuilt from the given events.
func (s *Scenario[A]) When(cmd func(a A) error) *Result[A] {
	s.t.Helper()
	a := s.newA()
	a.SetID(s.id)
	if len(s.given) > 0 {
		if err := aggregate.Replay(a, s.history()); err != nil {
			s.t.Fatalf("given: replaying %d events: %v", len(s.given), err)
		}
	}
	err := cmd(a)
	var raised []eventsource.Event
	for _, env := range a.Pending() {
		raised = append(raised, env.Event)
	}
	return &Result[A]{t: s.t, Aggregate: a, Err: err, Raised: raised}
}

func (s *Scenario[A]) history() iter.Seq2[eventsource.Envelope, error] {
	probe := s.newA()
	return func(yield func(eventsource.Envelope, error) bool) {
		for i, e := range s.given {
			e, err := asStored(e)
			if err != nil {
				yield(eventsource.Envelope{}, fmt.Errorf("given event %d (%T): %w", i+1, e, err))
				return
			}
			env := eventsource.NewEnvelope(e)
			env.AggregateType, env.AggregateID, env.Version = probe.AggregateType(), s.id, int64(i+1)
			if !yield(env, nil) {
				return
			}
		}
	}
}

// Result is what a command did.
type Result[A aggregate.Root] struct {
	t         testing.TB
	Aggregate A
	Err       error
	Raised    []eventsource.Event
}

// Then checks that the command succeeded and raised exactly events, in
// order (compared by type and JSON).
func (r *Result[A]) Then(events ...eventsource.Event) *Result[A] {
	r.t.Helper()
	if r.Err != nil {
		r.t.Fatalf("when: the command failed: %v\nwanted events:\n%s", r.Err, indent(Lines(events)))
	}
	if d := testdiff.Lines(Lines(events), Lines(r.Raised)); d != "" {
		r.t.Errorf("then: raised events differ (- want, + got):\n%s", d)
	}
	return r
}

// ThenError checks that the command failed with an error matching target
// (errors.Is) and raised nothing.
func (r *Result[A]) ThenError(target error) *Result[A] {
	r.t.Helper()
	switch {
	case r.Err == nil:
		r.t.Errorf("then: the command succeeded, want error %v; it raised:\n%s", target, indent(Lines(r.Raised)))
	case !errors.Is(r.Err, target):
		r.t.Errorf("then: error %v, want one matching %v", r.Err, target)
	case len(r.Raised) > 0:
		r.t.Errorf("then: the command failed (%v) but raised:\n%s", r.Err, indent(Lines(r.Raised)))
	}
	return r
}

// Lines renders events one a line as "Type {json}", the form of the
// kit's diffs.
func Lines(events []eventsource.Event) []string {
	out := make([]string, 0, len(events))
	for _, e := range events {
		data, err := json.Marshal(e)
		if err != nil {
			data = []byte(fmt.Sprintf("%#v", e))
		}
		out = append(out, e.EventType()+" "+string(data))
	}
	return out
}

func indent(lines []string) string {
	s := ""
	for _, l := range lines {
		s += "    " + l + "\n"
	}
	if s == "" {
		return "    (none)\n"
	}
	return s
}

// asStored returns e as the store's JSON codec gives it back: a new value
// of e's type decoded from e's JSON.
func asStored(e eventsource.Event) (eventsource.Event, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return e, err
	}
	t := reflect.TypeOf(e)
	ptr := t.Kind() == reflect.Pointer
	if ptr {
		t = t.Elem()
	}
	v := reflect.New(t)
	if err := json.Unmarshal(b, v.Interface()); err != nil {
		return e, err
	}
	if !ptr {
		v = v.Elem()
	}
	return v.Interface().(eventsource.Event), nil
}
