package saga_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/saga"
)

// TestLifecycle: a starting event creates the instance and dispatches with
// causation and correlation; an event for no instance is ignored; the
// ending event ends it and later events are ignored; the state survives
// a new store handle (a restart).
func TestLifecycle(t *testing.T) {
	name := uniqueName("lifecycle")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s := newCaseSaga(name)
			rec := &recorder{}
			r := saga.NewRunner(s, b.open(t), rec)
			caseID := "case-" + b.name

			if err := r.Handle(ctx, env(Bumped{Case: caseID})); err != nil {
				t.Fatal(err)
			}
			if n := len(rec.all()); n != 0 {
				t.Fatalf("a non-starting event for no instance dispatched %d commands", n)
			}
			opened := env(Opened{Case: caseID})
			opened.Metadata.CorrelationID = "corr-1"
			if err := r.Handle(ctx, opened); err != nil {
				t.Fatal(err)
			}
			got := rec.all()
			if len(got) != 1 || got[0].Type != "Ping" || got[0].CausationID != opened.ID.String() || got[0].CorrelationID != "corr-1" || got[0].ID == "" {
				t.Fatalf("after Opened dispatched %+v, want one Ping caused by %s in corr-1", got, opened.ID)
			}

			// A restart: a new runner on a new handle sees the state.
			r2 := saga.NewRunner(s, b.open(t), rec)
			bump := env(Bumped{Case: caseID}) // no correlation: the event's ID is
			if err := r2.Handle(ctx, bump); err != nil {
				t.Fatal(err)
			}
			got = rec.all()
			if len(got) != 2 || got[1].CorrelationID != bump.ID.String() || got[1].CausationID != bump.ID.String() {
				t.Fatalf("second command %+v, want correlation and causation %s", got[1:], bump.ID)
			}
			inst, err := b.open(t).Load(ctx, name, caseID)
			if err != nil {
				t.Fatal(err)
			}
			if string(inst.State) != `{"Bumps":1}` || len(inst.Outbox) != 0 || len(inst.Deadlines) != 1 || inst.Version != 4 {
				t.Fatalf("stored instance %+v, want 1 bump, an empty outbox, 1 deadline, version 4 (2 deliveries, 2 outbox removals)", inst)
			}
			if err := r2.Handle(ctx, env(Closed{Case: caseID})); err != nil {
				t.Fatal(err)
			}
			if err := r2.Handle(ctx, env(Bumped{Case: caseID})); err != nil {
				t.Fatal(err)
			}
			if n := len(rec.all()); n != 2 {
				t.Fatalf("%d commands after the instance ended, want 2", n)
			}
			inst, _ = b.open(t).Load(ctx, name, caseID)
			if !inst.Ended || len(inst.Deadlines) != 0 {
				t.Fatalf("ended instance %+v keeps deadlines or is not ended", inst)
			}
		})
	}
}

// TestRedeliveryDispatchesOnce: an event delivered twice dispatches its
// commands once; a dispatch that failed after the commit is retried on the
// redelivery with the same command ID, and only what failed is retried.
func TestRedeliveryDispatchesOnce(t *testing.T) {
	name := uniqueName("redelivery")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			failing := true
			var attempts []string
			rec := &recorder{fail: func(c saga.PendingCommand) error {
				attempts = append(attempts, c.ID)
				if failing {
					return errors.New("broker down")
				}
				return nil
			}}
			r := saga.NewRunner(newCaseSaga(name), b.open(t), rec)
			caseID := "case-" + b.name
			opened := env(Opened{Case: caseID})
			if err := r.Handle(ctx, opened); err == nil {
				t.Fatal("a failed dispatch was not reported: the bus would not redeliver")
			}
			failing = false
			for range 3 {
				if err := r.Handle(ctx, opened); err != nil {
					t.Fatal(err)
				}
			}
			if got := rec.count("Ping"); got != 1 {
				t.Fatalf("%d Pings dispatched for one event delivered 4 times, want 1", got)
			}
			if len(attempts) != 2 || attempts[0] != attempts[1] {
				t.Fatalf("dispatch attempts %q, want the same command ID twice", attempts)
			}
			inst, _ := b.open(t).Load(ctx, name, caseID)
			if len(inst.Processed) != 1 || len(inst.Outbox) != 0 {
				t.Fatalf("instance %+v, want one processed ID and an empty outbox", inst)
			}
		})
	}
}

// TestConcurrentDeliveriesLoseNothing: deliveries to one instance from
// many goroutines, each runner on its own store handle (its own
// connection pool, as another process), all count exactly once.
func TestConcurrentDeliveriesLoseNothing(t *testing.T) {
	name := uniqueName("concurrent")
	const runners, perRunner = 4, 10
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s := newCaseSaga(name)
			rec := &recorder{}
			caseID := "case-" + b.name
			if err := saga.NewRunner(s, b.open(t), rec).Handle(ctx, env(Opened{Case: caseID})); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, runners*perRunner*2)
			for range runners {
				r := saga.NewRunner(s, b.open(t), rec)
				for range perRunner {
					e := env(Bumped{Case: caseID})
					wg.Go(func() {
						errs <- r.Handle(ctx, e)
						errs <- r.Handle(ctx, e) // and a redelivery, concurrently with others
					})
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			inst, err := b.open(t).Load(ctx, name, caseID)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf(`{"Bumps":%d}`, runners*perRunner); string(inst.State) != want {
				t.Fatalf("state %s, want %s", inst.State, want)
			}
			if got, want := rec.count("Ping"), runners*perRunner+1; got != want {
				t.Fatalf("%d Pings, want %d", got, want)
			}
		})
	}
}

// TestDeadlinesFireOnceAcrossRunners: a deadline survives a restart (new
// handles), fires once when due even with three runners polling, and not
// before; a cancelled instance's deadline never fires.
func TestDeadlinesFireOnceAcrossRunners(t *testing.T) {
	name := uniqueName("deadlines")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			clock := newFakeClock()
			s := newCaseSaga(name)
			rec := &recorder{}
			first := saga.NewRunner(s, b.open(t), rec, saga.WithClock(clock.Now))
			for _, c := range []string{"slow", "closed"} {
				if err := first.Handle(ctx, env(Opened{Case: c + "-" + b.name})); err != nil {
					t.Fatal(err)
				}
			}
			if err := first.Handle(ctx, env(Closed{Case: "closed-" + b.name})); err != nil {
				t.Fatal(err)
			}

			// The process restarts: three runners on new handles.
			runCtx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			for range 3 {
				r := saga.NewRunner(s, b.open(t), rec, saga.WithClock(clock.Now),
					saga.WithPollInterval(2*time.Millisecond), saga.WithClaimHold(time.Minute))
				wg.Go(func() { _ = r.RunDeadlines(runCtx) })
			}
			clock.Advance(14 * time.Minute)
			// Not due yet: a direct pass fires nothing.
			if n, err := saga.NewRunner(s, b.open(t), rec, saga.WithClock(clock.Now)).FireDue(ctx); err != nil || n != 0 {
				t.Fatalf("FireDue 1 minute early = %d, %v; want 0", n, err)
			}
			clock.Advance(time.Minute)
			waitUntil(t, 10*time.Second, "the deadline to fire", func() bool { return rec.count("Expire") >= 1 })
			// Let the runners scan a while longer: nothing fires twice.
			for range 3 {
				clock.Advance(time.Hour)
				if n, err := saga.NewRunner(s, b.open(t), rec, saga.WithClock(clock.Now)).FireDue(ctx); err != nil || n != 0 {
					t.Fatalf("FireDue after the firing = %d, %v; want 0", n, err)
				}
			}
			stop()
			wg.Wait()
			var expired []string
			for _, c := range rec.all() {
				if c.Type == "Expire" {
					expired = append(expired, string(c.Data))
				}
			}
			if want := fmt.Sprintf(`{"Case":"slow-%s"}`, b.name); len(expired) != 1 || expired[0] != want {
				t.Fatalf("Expire commands %q, want exactly one for the slow case", expired)
			}
			inst, _ := b.open(t).Load(ctx, name, "slow-"+b.name)
			if !inst.Ended || len(inst.Deadlines) != 0 {
				t.Fatalf("instance after its deadline: %+v", inst)
			}
		})
	}
}

// TestCommandsThroughRepositoryCarryMetadata is in repository_test.go.

// TestAssociationMissingIsPermanent: an event that maps to no instance is
// refused with a permanent error, so a bus dead-letters it.
func TestAssociationMissingIsPermanent(t *testing.T) {
	r := saga.NewRunner(newCaseSaga("perm"), saga.NewMemoryStore(), &recorder{})
	err := r.Handle(context.Background(), env(Opened{}))
	if err == nil || !isPermanent(err) {
		t.Fatalf("Handle = %v, want a permanent error", err)
	}
	if err := r.Handle(context.Background(), eventsource.NewEnvelope(Ping2{})); err != nil {
		t.Fatalf("an event the saga does not handle: %v", err)
	}
}

type Ping2 struct{}

func (Ping2) EventType() string { return "Ping2" }
