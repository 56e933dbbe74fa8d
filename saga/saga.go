package saga

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/eventsource-go/eventsource"
)

// Saga is the definition of a process manager with state S: the events it
// handles and its deadlines. S is saved as JSON between deliveries, so its
// fields must be exported (or it must implement json.Marshaler).
type Saga[S any] struct {
	name      string
	handlers  map[string]eventHandler[S]
	deadlines map[string]func(ctx context.Context, sc *Scope[S], d Deadline) error
}

type eventHandler[S any] struct {
	associate func(env eventsource.Envelope) (string, error)
	starts    bool
	ends      bool
	handle    func(ctx context.Context, sc *Scope[S], env eventsource.Envelope) error
}

// New returns an empty saga definition. name is its identity: the bus
// handler name (saga:name), the key of its instances and deadlines in a
// Store, and the prefix of its commands' IDs. It must stay the same across
// deploys.
func New[S any](name string) *Saga[S] {
	if name == "" {
		panic("saga: New needs a name")
	}
	return &Saga[S]{name: name, handlers: map[string]eventHandler[S]{},
		deadlines: map[string]func(context.Context, *Scope[S], Deadline) error{}}
}

// Name returns the saga's name.
func (s *Saga[S]) Name() string { return s.name }

// EventTypes returns the types the saga handles, sorted.
func (s *Saga[S]) EventTypes() []string {
	types := make([]string, 0, len(s.handlers))
	for t := range s.handlers {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

// HandleOption qualifies how an event type drives instances.
type HandleOption func(*handleConfig)

type handleConfig struct{ starts, ends bool }

// Starts lets the event create the instance it maps to. An event that does
// not start an instance is ignored when its instance does not exist.
func Starts() HandleOption { return func(c *handleConfig) { c.starts = true } }

// Ends ends the instance once the handler has run: its deadlines are
// dropped and later events for it are ignored. A handler can also end its
// instance conditionally with Scope.End.
func Ends() HandleOption { return func(c *handleConfig) { c.ends = true } }

// On declares that s handles events of type E: associate maps one to the
// ID of its instance (an empty ID is refused as a permanent error), and fn
// reacts to it. fn may run more than once for one delivery (after a
// conflict with a concurrent delivery): it must act only through sc.
func On[E eventsource.Event, S any](s *Saga[S], associate func(e E) string,
	fn func(ctx context.Context, sc *Scope[S], e E) error, opts ...HandleOption) {
	name, err := eventsource.TypeNameOf[E]()
	if err != nil {
		panic(fmt.Sprintf("saga %s: %v", s.name, err))
	}
	if _, dup := s.handlers[name]; dup {
		panic(fmt.Sprintf("saga %s: %s is handled twice", s.name, name))
	}
	var c handleConfig
	for _, o := range opts {
		o(&c)
	}
	s.handlers[name] = eventHandler[S]{
		associate: func(env eventsource.Envelope) (string, error) {
			e, ok := env.Event.(E)
			if !ok {
				return "", fmt.Errorf("%w: %s payload is %T, the saga expects %T", eventsource.ErrInvalidEvent, env.Type, env.Event, e)
			}
			return associate(e), nil
		},
		starts: c.starts,
		ends:   c.ends,
		handle: func(ctx context.Context, sc *Scope[S], env eventsource.Envelope) error {
			e, ok := env.Event.(E)
			if !ok {
				return fmt.Errorf("%w: %s payload is %T", eventsource.ErrInvalidEvent, env.Type, env.Event)
			}
			return fn(ctx, sc, e)
		},
	}
}

// OnDeadline declares what happens when a deadline called name, scheduled
// with Scope.Schedule, comes due.
func OnDeadline[S any](s *Saga[S], name string, fn func(ctx context.Context, sc *Scope[S], d Deadline) error) {
	if name == outboxDeadline {
		panic(fmt.Sprintf("saga %s: deadline name %s is reserved", s.name, name))
	}
	if _, dup := s.deadlines[name]; dup {
		panic(fmt.Sprintf("saga %s: deadline %s is handled twice", s.name, name))
	}
	s.deadlines[name] = fn
}

// Scope is what a handler sees of its instance: the state to change, and
// the effects to request. The effects take place only if the delivery's
// write commits.
type Scope[S any] struct {
	// State is the instance's state; the handler changes it in place.
	State *S

	id      string
	now     time.Time
	trigger eventsource.Envelope // zero for a deadline
	ended   bool
	cmds    []Command
	sched   map[string]time.Time // name -> due; zero time: cancel
}

// ID returns the instance's association ID.
func (sc *Scope[S]) ID() string { return sc.id }

// Now returns the runner's clock at the delivery.
func (sc *Scope[S]) Now() time.Time { return sc.now }

// Event returns the envelope being handled (the zero Envelope for a
// deadline).
func (sc *Scope[S]) Event() eventsource.Envelope { return sc.trigger }

// Dispatch sends cmd once the delivery commits, through the runner's
// Dispatcher, with causation and correlation set.
func (sc *Scope[S]) Dispatch(cmd Command) { sc.cmds = append(sc.cmds, cmd) }

// Schedule sets the deadline called name to fire after d from now,
// replacing one of that name the instance has.
func (sc *Scope[S]) Schedule(name string, d time.Duration) { sc.ScheduleAt(name, sc.now.Add(d)) }

// ScheduleAt sets the deadline called name to fire at t.
func (sc *Scope[S]) ScheduleAt(name string, t time.Time) {
	if sc.sched == nil {
		sc.sched = map[string]time.Time{}
	}
	sc.sched[name] = t
}

// CancelDeadline drops the deadline called name, if the instance has one.
func (sc *Scope[S]) CancelDeadline(name string) {
	if sc.sched == nil {
		sc.sched = map[string]time.Time{}
	}
	sc.sched[name] = time.Time{}
}

// End ends the instance after this delivery.
func (sc *Scope[S]) End() { sc.ended = true }
