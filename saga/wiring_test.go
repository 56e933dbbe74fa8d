package saga_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/repository"
	"github.com/eventsource-go/eventsource/saga"
)

// Pinger is an aggregate the saga's Ping command reaches.
type Pinger struct {
	aggregate.Base
	pings int
}

type Pinged struct{ Case string }

func (Pinged) EventType() string          { return "Pinged" }
func (*Pinger) AggregateType() string     { return "Pinger" }
func (p *Pinger) Apply(eventsource.Event) { p.pings++ }

func pingHandler(repo *repository.Repository[*Pinger]) func(context.Context, Ping) error {
	return func(ctx context.Context, c Ping) error {
		p, err := repo.Load(ctx, c.Case)
		if errors.Is(err, eventsource.ErrNotFound) {
			p = &Pinger{}
			p.SetID(c.Case)
		} else if err != nil {
			return err
		}
		aggregate.Raise(p, Pinged{Case: c.Case})
		return repo.Save(ctx, p)
	}
}

// TestSubscribeRunsCommandsThroughRepositories: a saga subscribed on the
// in-process bus sends commands whose events are stored with the
// triggering event's correlation and causation; a redelivered event
// stores nothing more.
func TestSubscribeRunsCommandsThroughRepositories(t *testing.T) {
	ctx := context.Background()
	b := bus.NewInProcess()
	defer b.Close(ctx)
	store := eventstore.NewMemory()
	repo := repository.New(store, nil, func() *Pinger { return &Pinger{} })
	cmds := saga.NewCommands()
	saga.Handle(cmds, pingHandler(repo))
	saga.Handle(cmds, func(context.Context, Expire) error { return nil })
	r := saga.NewRunner(newCaseSaga("wiring"), saga.NewMemoryStore(), cmds)
	sub, err := saga.Subscribe(b, r)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if st := b.Stats(); st.Subscribers["Opened"] != 1 || st.Subscribers["Closed"] != 1 {
		t.Fatalf("subscribers %v, want the saga on each of its types", st.Subscribers)
	}
	opened := env(Opened{Case: "k1"})
	opened.Metadata.CorrelationID = "checkout-7"
	for range 2 { // published twice: at-least-once
		if err := b.Publish(ctx, opened); err != nil {
			t.Fatal(err)
		}
	}
	var stored []eventsource.Envelope
	for e, err := range store.Load(ctx, eventsource.StreamID("Pinger", "k1"), 1) {
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, e)
	}
	if len(stored) != 1 {
		t.Fatalf("%d Pinged events stored, want 1", len(stored))
	}
	if md := stored[0].Metadata; md.CorrelationID != "checkout-7" || md.CausationID != opened.ID.String() {
		t.Fatalf("stored metadata %+v, want correlation checkout-7 and causation %s", md, opened.ID)
	}
	if st := b.Stats(); st.HandlerErrors != 0 {
		t.Fatalf("%d handler errors", st.HandlerErrors)
	}
}

// TestFollowFromStore: the runner fed by a Follower from the event store
// handles each stored event once.
func TestFollowFromStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	store := eventstore.NewMemory()
	var events []eventsource.Envelope
	for i, e := range []eventsource.Event{Opened{Case: "f1"}, Bumped{Case: "f1"}, Bumped{Case: "f1"}, Opened{Case: "f2"}} {
		en := eventsource.NewEnvelope(e)
		en.AggregateType, en.AggregateID, en.Version = "Case", "src", int64(i+1)
		events = append(events, en)
	}
	if _, err := store.Append(ctx, eventsource.StreamID("Case", "src"), 0, events); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	states := saga.NewMemoryStore()
	r := saga.NewRunner(newCaseSaga("follow"), states, rec)
	f := &eventstore.Follower{Name: "saga:follow", Store: store, Checkpoints: eventstore.NewMemoryCheckpoints()}
	done := make(chan error, 1)
	go func() { done <- r.Follow(ctx, f, 5*time.Millisecond) }()
	waitUntil(t, 5*time.Second, "the follower to catch up", func() bool { return f.Status().Position == 4 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := rec.count("Ping"); got != 4 {
		t.Fatalf("%d Pings, want 4", got)
	}
	inst, _ := states.Load(context.Background(), "follow", "f1")
	if string(inst.State) != `{"Bumps":2}` {
		t.Fatalf("f1 state %s, want 2 bumps", inst.State)
	}
}

// TestRunDeadlinesDispatchesWhatAFailedDispatchLeft: a command whose
// dispatch failed, and whose event is never redelivered, is dispatched by
// the deadline runner, once.
func TestRunDeadlinesDispatchesWhatAFailedDispatchLeft(t *testing.T) {
	name := uniqueName("sweep")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			var fail atomic.Bool
			fail.Store(true)
			rec := &recorder{fail: func(saga.PendingCommand) error {
				if fail.Load() {
					return errors.New("down")
				}
				return nil
			}}
			s := newCaseSaga(name)
			if err := saga.NewRunner(s, b.open(t), rec).Handle(ctx, env(Opened{Case: "s-" + b.name})); err == nil {
				t.Fatal("the failed dispatch was not reported")
			}
			fail.Store(false)
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan struct{}, 2)
			for range 2 {
				r := saga.NewRunner(s, b.open(t), rec, saga.WithPollInterval(2*time.Millisecond))
				go func() { _ = r.RunDeadlines(runCtx); done <- struct{}{} }()
			}
			waitUntil(t, 10*time.Second, "the swept Ping", func() bool { return rec.count("Ping") == 1 })
			waitUntil(t, 10*time.Second, "the outbox to empty", func() bool {
				inst, err := b.open(t).Load(ctx, name, "s-"+b.name)
				return err == nil && len(inst.Outbox) == 0
			})
			stop()
			<-done
			<-done
			if got := rec.count("Ping"); got != 1 {
				t.Fatalf("%d Pings, want 1", got)
			}
		})
	}
}

// TestFollowSkipsPermanentFailures: an event the saga can never handle (it
// maps to no instance) does not wedge a runner fed from the store: it is
// logged and skipped, as a bus dead-letters it, and the events after it
// are handled.
func TestFollowSkipsPermanentFailures(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := eventstore.NewMemory()
	var events []eventsource.Envelope
	for i, e := range []eventsource.Event{Opened{Case: ""}, Opened{Case: "good"}} {
		en := eventsource.NewEnvelope(e)
		en.AggregateType, en.AggregateID, en.Version = "Case", "src", int64(i+1)
		events = append(events, en)
	}
	if _, err := store.Append(ctx, eventsource.StreamID("Case", "src"), 0, events); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	var logs testenv.Buffer
	r := saga.NewRunner(newCaseSaga("skip"), saga.NewMemoryStore(), rec,
		saga.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	f := &eventstore.Follower{Name: "saga:skip", Store: store, Checkpoints: eventstore.NewMemoryCheckpoints(),
		RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	done := make(chan error, 1)
	go func() { done <- r.Follow(ctx, f, 5*time.Millisecond) }()
	waitUntil(t, 5*time.Second, "the follower to pass the unmappable event", func() bool { return f.Status().Position == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := rec.count("Ping"); got != 1 {
		t.Fatalf("%d Pings, want 1 (the good event's)", got)
	}
	if !strings.Contains(logs.String(), "maps to no instance") || !strings.Contains(logs.String(), events[0].ID.String()) {
		t.Fatalf("the skipped event was not logged with its ID; log:\n%s", logs.String())
	}
}
