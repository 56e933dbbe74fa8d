// Package sagatest tests sagas given/when/then: given past events, when
// an event (or time passing), then these commands and these deadlines. It
// runs the saga on a saga.MemoryStore with a fake clock; a redelivery of
// every event is part of each step, so a saga that is not idempotent
// fails. A failure shows a diff, one command a line as "Type {json}" and
// one deadline a line as "name of instance in 15m0s".
//
//	sagatest.For(t, paymentSaga).
//		Given(OrderPlaced{OrderID: "o1"}).
//		WhenTimePasses(16 * time.Minute).
//		ThenCommands(CancelOrder{OrderID: "o1", Reason: "payment timeout"}).
//		ThenDeadlines()
package sagatest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/internal/testdiff"
	"github.com/eventsource-go/eventsource/saga"
)

// Start is the fake clock's time when a scenario begins.
var Start = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

// Scenario is a saga under test.
type Scenario[S any] struct {
	t      testing.TB
	saga   *saga.Saga[S]
	store  *recordingStore
	runner *saga.Runner[S]
	now    time.Time
	sent   []saga.PendingCommand
	mu     sync.Mutex
}

// For starts a scenario for s.
func For[S any](t testing.TB, s *saga.Saga[S]) *Scenario[S] {
	sc := &Scenario[S]{t: t, saga: s, now: Start,
		store: &recordingStore{Store: saga.NewMemoryStore(), last: map[string]saga.Instance{}}}
	sc.runner = saga.NewRunner(s, sc.store, saga.DispatcherFunc(sc.record), saga.WithClock(sc.clock))
	return sc
}

func (sc *Scenario[S]) clock() time.Time {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.now
}

func (sc *Scenario[S]) record(_ context.Context, c saga.PendingCommand) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.sent = append(sc.sent, c)
	return nil
}

// Given delivers past events; what they dispatch is not checked.
func (sc *Scenario[S]) Given(events ...eventsource.Event) *Scenario[S] {
	sc.t.Helper()
	sc.deliver("given", events)
	sc.sent = nil
	return sc
}

// GivenTimePasses advances the clock and fires what comes due, unchecked.
func (sc *Scenario[S]) GivenTimePasses(d time.Duration) *Scenario[S] {
	sc.t.Helper()
	sc.advance("given", d)
	sc.sent = nil
	return sc
}

// When delivers events (each twice, as a redelivering bus may).
func (sc *Scenario[S]) When(events ...eventsource.Event) *Result[S] {
	sc.t.Helper()
	sc.deliver("when", events)
	return sc.result()
}

// WhenTimePasses advances the clock by d and fires the deadlines due.
func (sc *Scenario[S]) WhenTimePasses(d time.Duration) *Result[S] {
	sc.t.Helper()
	sc.advance("when", d)
	return sc.result()
}

func (sc *Scenario[S]) deliver(step string, events []eventsource.Event) {
	sc.t.Helper()
	for _, e := range events {
		env := eventsource.NewEnvelope(e)
		env.AggregateType, env.AggregateID, env.Version, env.OccurredAt = "sagatest", "sagatest", 1, sc.clock()
		for range 2 {
			if err := sc.runner.Handle(context.Background(), env); err != nil {
				sc.t.Fatalf("%s: %s: %v", step, e.EventType(), err)
			}
		}
	}
}

func (sc *Scenario[S]) advance(step string, d time.Duration) {
	sc.t.Helper()
	end := sc.clock().Add(d)
	for {
		// Step the clock to each deadline in turn, as a runner on a real
		// clock fires them: one that a fired deadline schedules within d
		// fires too, and handlers see its due time as Now. Only deadlines
		// after now count, so that one that cannot fire (its handler
		// failed, its claim held) does not stop the clock.
		now := sc.clock()
		next := end
		for _, inst := range sc.store.instances() {
			for _, dl := range inst.Deadlines {
				if dl.Due.After(now) && dl.Due.Before(next) {
					next = dl.Due
				}
			}
		}
		sc.mu.Lock()
		sc.now = next
		sc.mu.Unlock()
		if _, err := sc.runner.FireDue(context.Background()); err != nil {
			sc.t.Fatalf("%s: firing deadlines: %v", step, err)
		}
		if !next.Before(end) {
			return
		}
	}
}

func (sc *Scenario[S]) result() *Result[S] {
	r := &Result[S]{t: sc.t, sc: sc, Commands: sc.sent}
	sc.sent = nil
	return r
}

// Result is what one step dispatched and left scheduled.
type Result[S any] struct {
	t        testing.TB
	sc       *Scenario[S]
	Commands []saga.PendingCommand
}

// ThenCommands checks the commands the step dispatched, in order
// (compared by type and JSON).
func (r *Result[S]) ThenCommands(cmds ...saga.Command) *Result[S] {
	r.t.Helper()
	want := make([]string, 0, len(cmds))
	for _, c := range cmds {
		data, err := json.Marshal(c)
		if err != nil {
			r.t.Fatalf("then: encode %T: %v", c, err)
		}
		want = append(want, c.CommandType()+" "+string(data))
	}
	got := make([]string, 0, len(r.Commands))
	for _, c := range r.Commands {
		got = append(got, c.Type+" "+string(c.Data))
	}
	if d := testdiff.Lines(want, got); d != "" {
		r.t.Errorf("then: dispatched commands differ (- want, + got):\n%s", d)
	}
	return r
}

// Expected is a deadline ThenDeadlines looks for.
type Expected struct {
	Name, Instance string
	In             time.Duration // from the clock's time after the step
}

// Deadline is the deadline name of instance, due in d.
func Deadline(name, instance string, d time.Duration) Expected {
	return Expected{Name: name, Instance: instance, In: d}
}

func (e Expected) String() string { return fmt.Sprintf("%s of %s in %s", e.Name, e.Instance, e.In) }

// ThenDeadlines checks every deadline scheduled across the saga's
// instances (none, when called with none).
func (r *Result[S]) ThenDeadlines(want ...Expected) *Result[S] {
	r.t.Helper()
	now := r.sc.clock()
	var got, ws []string
	for _, inst := range r.sc.store.instances() {
		for _, d := range inst.Deadlines {
			got = append(got, Expected{Name: d.Name, Instance: inst.ID, In: d.Due.Sub(now)}.String())
		}
	}
	for _, w := range want {
		ws = append(ws, w.String())
	}
	slices.Sort(got)
	slices.Sort(ws)
	if d := testdiff.Lines(ws, got); d != "" {
		r.t.Errorf("then: scheduled deadlines differ (- want, + got):\n%s", d)
	}
	return r
}

// ThenEnded checks whether the instance has ended; it fails when the
// instance does not exist.
func (r *Result[S]) ThenEnded(instance string, ended bool) *Result[S] {
	r.t.Helper()
	inst, ok := r.sc.store.lookup(instance)
	switch {
	case !ok:
		r.t.Errorf("then: no instance %s, want one with ended = %v", instance, ended)
	case inst.Ended != ended:
		r.t.Errorf("then: instance %s ended = %v, want %v", instance, inst.Ended, ended)
	}
	return r
}

// ThenState checks the instance's state (compared as JSON).
func (r *Result[S]) ThenState(instance string, want S) *Result[S] {
	r.t.Helper()
	w, err := json.Marshal(want)
	if err != nil {
		r.t.Fatalf("then: encode state: %v", err)
	}
	got := r.sc.store.get(instance).State
	if d := testdiff.Lines([]string{string(w)}, []string{string(got)}); d != "" {
		r.t.Errorf("then: state of %s differs (- want, + got):\n%s", instance, d)
	}
	return r
}

// recordingStore remembers the instances saved, for ThenDeadlines.
type recordingStore struct {
	saga.Store
	mu   sync.Mutex
	last map[string]saga.Instance
}

func (s *recordingStore) Save(ctx context.Context, inst *saga.Instance) error {
	if err := s.Store.Save(ctx, inst); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last[inst.ID] = *inst
	return nil
}

func (s *recordingStore) get(id string) saga.Instance {
	inst, _ := s.lookup(id)
	return inst
}

func (s *recordingStore) lookup(id string) (saga.Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.last[id]
	return inst, ok
}

func (s *recordingStore) instances() []saga.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]saga.Instance, 0, len(s.last))
	for _, i := range s.last {
		out = append(out, i)
	}
	return out
}
