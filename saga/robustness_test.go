package saga_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/saga"
)

// newEndingSaga is newCaseSaga except that its ending event dispatches a
// command: what it sends must survive a failed dispatch like any other.
func newEndingSaga(name string) *saga.Saga[caseState] {
	s := saga.New[caseState](name)
	saga.On(s, func(e Opened) string { return e.Case }, func(context.Context, *saga.Scope[caseState], Opened) error {
		return nil
	}, saga.Starts())
	saga.On(s, func(e Closed) string { return e.Case }, func(_ context.Context, sc *saga.Scope[caseState], e Closed) error {
		sc.Dispatch(Ping{Case: e.Case})
		return nil
	}, saga.Ends())
	return s
}

// TestRedeliveryOfEndingEventDispatches: the ending event's command,
// whose dispatch failed, is dispatched on the event's redelivery, as any
// event's is (the Dispatcher's contract): the instance having ended must
// not turn the redelivery into a no-op that the bus acknowledges.
func TestRedeliveryOfEndingEventDispatches(t *testing.T) {
	name := uniqueName("endredeliver")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			clock := newFakeClock()
			var fail atomic.Bool
			fail.Store(true)
			rec := &recorder{fail: func(saga.PendingCommand) error {
				if fail.Load() {
					return errors.New("broker down")
				}
				return nil
			}}
			store := b.open(t)
			r := saga.NewRunner(newEndingSaga(name), store, rec, saga.WithClock(clock.Now))
			caseID := "end-" + b.name
			if err := r.Handle(ctx, env(Opened{Case: caseID})); err != nil {
				t.Fatal(err)
			}
			closed := env(Closed{Case: caseID})
			if err := r.Handle(ctx, closed); err == nil {
				t.Fatal("the failed dispatch was not reported: the bus would not redeliver")
			}
			fail.Store(false)
			if err := r.Handle(ctx, closed); err != nil {
				t.Fatal(err)
			}
			if n := rec.count("Ping"); n != 1 {
				t.Fatalf("%d Pings after the ending event's redelivery, want 1", n)
			}
			if inst := mustLoad(t, store, name, caseID); !inst.Ended || len(inst.Outbox) != 0 {
				t.Fatalf("instance %+v, want ended with an empty outbox", inst)
			}
		})
	}
}

// TestCancelledCtxAfterDispatch: a delivery whose ctx ends just after its
// command was dispatched (a bus closing) still records the dispatch, so
// the sweep does not send the command a second time.
func TestCancelledCtxAfterDispatch(t *testing.T) {
	name := uniqueName("cancelled")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			clock := newFakeClock()
			store := b.open(t)
			s := newCaseSaga(name)

			// The dispatch succeeds, then the ctx ends.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rec := &recorder{fail: func(saga.PendingCommand) error { cancel(); return nil }}
			r := saga.NewRunner(s, store, rec, saga.WithClock(clock.Now), saga.WithClaimHold(time.Minute))
			done := "done-" + b.name
			_ = r.Handle(ctx, env(Opened{Case: done})) // the error, if any, is the ctx's
			rec.fail = nil
			clock.Advance(2 * time.Minute) // past the claim hold: a sweep may take what is left
			if _, err := r.FireDue(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := rec.count("Ping"); n != 1 {
				t.Fatalf("%d Pings for one event whose ctx ended after the dispatch, want 1", n)
			}
		})
	}
}

// TestCancelledCtxDispatchFailedIsReleased: a dispatch that fails because
// its ctx ended (a bus closing) releases its claim although the ctx has
// ended, so the event's redelivery, to this or another process and before
// the claim would expire, dispatches the command; before, the redelivery
// found it claimed, skipped it and was acknowledged, leaving it to a sweep
// that a saga without deadlines may not run.
func TestCancelledCtxDispatchFailedIsReleased(t *testing.T) {
	name := uniqueName("cancelfail")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			clock := newFakeClock()
			store := b.open(t)
			rec := &recorder{}
			r := saga.NewRunner(newCaseSaga(name), store, rec, saga.WithClock(clock.Now), saga.WithClaimHold(time.Minute))
			ctx2, cancel2 := context.WithCancel(context.Background())
			defer cancel2()
			rec.fail = func(saga.PendingCommand) error { cancel2(); return context.Canceled }
			failed := "failed-" + b.name
			opened := env(Opened{Case: failed})
			if err := r.Handle(ctx2, opened); err == nil {
				t.Fatal("the failed dispatch was not reported")
			}
			rec.fail = nil
			if err := r.Handle(context.Background(), opened); err != nil {
				t.Fatal(err)
			}
			if n := rec.count("Ping"); n != 1 {
				t.Fatalf("%d Pings after the redelivery, want 1: the failed command was not dispatched", n)
			}
			if inst := mustLoad(t, store, name, failed); len(inst.Outbox) != 0 {
				t.Fatalf("outbox %+v after the redelivery, want empty", inst.Outbox)
			}
		})
	}
}

// TestPanicsBecomeErrors: a handler, deadline handler or Dispatcher that
// panics fails its delivery with an error instead of taking the process
// down (RunDeadlines and Follow have no bus to recover it), and the other
// deadlines of the pass still fire.
func TestPanicsBecomeErrors(t *testing.T) {
	name := uniqueName("panics")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			clock := newFakeClock()
			store := b.open(t)
			s := saga.New[caseState](name)
			saga.On(s, func(e Opened) string { return e.Case }, func(_ context.Context, sc *saga.Scope[caseState], e Opened) error {
				if e.Case == "boom" {
					panic("handler bug")
				}
				sc.Dispatch(Ping{Case: e.Case})
				sc.Schedule("expire", time.Minute)
				return nil
			}, saga.Starts())
			saga.OnDeadline(s, "expire", func(_ context.Context, sc *saga.Scope[caseState], _ saga.Deadline) error {
				if sc.ID() == "a" {
					panic("deadline bug")
				}
				sc.Dispatch(Expire{Case: sc.ID()})
				return nil
			})
			var panicky atomic.Bool
			rec := &recorder{fail: func(saga.PendingCommand) error {
				if panicky.Load() {
					panic("dispatcher bug")
				}
				return nil
			}}
			r := saga.NewRunner(s, store, rec, saga.WithClock(clock.Now))

			noPanic := func(what string, f func() error) error {
				t.Helper()
				var err error
				func() {
					defer func() {
						if p := recover(); p != nil {
							t.Fatalf("%s panicked: %v", what, p)
						}
					}()
					err = f()
				}()
				return err
			}
			if err := noPanic("Handle", func() error { return r.Handle(ctx, env(Opened{Case: "boom"})) }); err == nil {
				t.Fatal("a panicking handler's delivery succeeded")
			}
			if got := mustLoad(t, store, name, "boom"); got.Version != 0 {
				t.Fatalf("a panicking handler's delivery was saved: %+v", got)
			}
			for _, c := range []string{"a", "b"} {
				if err := r.Handle(ctx, env(Opened{Case: c})); err != nil {
					t.Fatal(err)
				}
			}
			clock.Advance(2 * time.Minute)
			var n int
			err := noPanic("FireDue", func() (err error) { n, err = r.FireDue(ctx); return err })
			if err == nil || n != 1 || rec.count("Expire") != 1 {
				t.Fatalf("FireDue = %d, %v with %d Expires; want b's fired and a's error", n, err, rec.count("Expire"))
			}
			if got := mustLoad(t, store, name, "a"); len(got.Deadlines) != 1 {
				t.Fatalf("a's deadline is gone after its handler panicked: %+v", got)
			}

			panicky.Store(true)
			opened := env(Opened{Case: "c"})
			if err := noPanic("Handle", func() error { return r.Handle(ctx, opened) }); err == nil {
				t.Fatal("a panicking dispatch succeeded")
			}
			panicky.Store(false)
			// Released like any failed dispatch: the redelivery sends it.
			if err := r.Handle(ctx, opened); err != nil {
				t.Fatal(err)
			}
			if got := mustLoad(t, store, name, "c"); len(got.Outbox) != 0 {
				t.Fatalf("outbox %+v after the redelivery, want empty", got.Outbox)
			}
		})
	}
}

// conflictOnce is a Store whose first Save of a deadline's firing loses
// to another runner firing the same deadline first.
type conflictOnce struct {
	saga.Store
	done atomic.Bool
}

func (s *conflictOnce) Save(ctx context.Context, inst *saga.Instance) error {
	if len(inst.Processed) > 1 && s.done.CompareAndSwap(false, true) {
		other, err := s.Store.Load(ctx, inst.Saga, inst.ID)
		if err != nil {
			return err
		}
		other.Deadlines = nil // fired by the other runner
		other.Processed = append(other.Processed, "other")
		if err := s.Store.Save(ctx, &other); err != nil {
			return err
		}
	}
	return s.Store.Save(ctx, inst)
}

// TestFireDueCountsOnlyCommittedFirings: a deadline that another runner
// fired while this one ran its handler is not counted (nor reported to the
// observer) as fired by this one.
func TestFireDueCountsOnlyCommittedFirings(t *testing.T) {
	name := uniqueName("firecount")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			clock := newFakeClock()
			store := &conflictOnce{Store: b.open(t)}
			rec := &recorder{}
			r := saga.NewRunner(newCaseSaga(name), store, rec, saga.WithClock(clock.Now))
			if err := r.Handle(ctx, env(Opened{Case: "x"})); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Hour)
			n, err := r.FireDue(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n != 0 || rec.count("Expire") != 0 {
				t.Fatalf("FireDue = %d with %d Expires, want 0: the other runner fired it", n, rec.count("Expire"))
			}
		})
	}
}

// TestWrongPayloadIsInvalidEvent: an event whose payload is not the Go
// type the saga declared for its type name (a pointer, say) is refused
// with a permanent error matching eventsource.ErrInvalidEvent, not
// reported as mapping to no instance.
func TestWrongPayloadIsInvalidEvent(t *testing.T) {
	r := saga.NewRunner(newCaseSaga("payload"), saga.NewMemoryStore(), &recorder{})
	e := env(&Opened{Case: "p"})
	err := r.Handle(context.Background(), e)
	if !errors.Is(err, eventsource.ErrInvalidEvent) || !isPermanent(err) {
		t.Fatalf("Handle(%T) = %v, want a permanent error matching ErrInvalidEvent", e.Event, err)
	}
}

// TestReservedDeadlineNameIsDropped: a deadline a handler schedules under
// the name the outbox's index row uses, which no OnDeadline can handle,
// is dropped when due like any deadline without a handler, instead of
// being taken for the outbox's row and claimed again forever.
func TestReservedDeadlineNameIsDropped(t *testing.T) {
	name := uniqueName("reserved")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			clock := newFakeClock()
			store := b.open(t)
			s := saga.New[caseState](name)
			saga.On(s, func(e Opened) string { return e.Case }, func(_ context.Context, sc *saga.Scope[caseState], _ Opened) error {
				sc.Schedule("saga.outbox", time.Minute)
				return nil
			}, saga.Starts())
			r := saga.NewRunner(s, store, &recorder{}, saga.WithClock(clock.Now), saga.WithClaimHold(time.Minute))
			if err := r.Handle(ctx, env(Opened{Case: "r"})); err != nil {
				t.Fatal(err)
			}
			clock.Advance(2 * time.Minute)
			if _, err := r.FireDue(ctx); err != nil {
				t.Fatal(err)
			}
			if got := mustLoad(t, store, name, "r"); len(got.Deadlines) != 0 {
				t.Fatalf("deadlines %+v after the due pass, want the handler-less one dropped", got.Deadlines)
			}
			clock.Advance(time.Hour)
			if due, err := store.ClaimDue(ctx, name, clock.Now(), time.Minute, 10); err != nil || len(due) != 0 {
				t.Fatalf("ClaimDue after the drop = %+v, %v; want nothing left to fire", due, err)
			}
		})
	}
}

// TestMemoryStoreForgetsClaims: the memory store, for single-process use,
// does not keep a claim per deadline ever fired: a long-running process
// would grow without bound.
func TestMemoryStoreForgetsClaims(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	store := saga.NewMemoryStore()
	r := saga.NewRunner(newCaseSaga("claims"), store, &recorder{}, saga.WithClock(clock.Now), saga.WithClaimHold(time.Minute))
	for i := range 50 {
		if err := r.Handle(ctx, env(Opened{Case: fmt.Sprint("c", i)})); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Hour)
		if n, err := r.FireDue(ctx); err != nil || n != 1 {
			t.Fatalf("FireDue = %d, %v; want 1", n, err)
		}
	}
	if n := saga.MemoryClaims(store); n > 1 {
		t.Fatalf("the memory store keeps %d claims after 50 deadlines fired and their holds expired, want at most the last", n)
	}
}

// TestZeroTimingsMeanDefaults: a poll interval of 0 would spin
// RunDeadlines, and a claim hold of 0 would let every runner claim every
// due deadline at once; both mean the defaults.
func TestZeroTimingsMeanDefaults(t *testing.T) {
	r := saga.NewRunner(newCaseSaga("zero"), saga.NewMemoryStore(), &recorder{},
		saga.WithPollInterval(0), saga.WithClaimHold(-time.Second))
	if poll, hold := saga.Timing(r); poll != saga.DefaultPollInterval || hold != saga.DefaultClaimHold {
		t.Fatalf("poll %v, hold %v; want the defaults %v, %v", poll, hold, saga.DefaultPollInterval, saga.DefaultClaimHold)
	}
}

// TestPanickingAssociationIsPermanent: a mapping from event to instance
// that panics fails that event for good (a bus dead-letters it) instead of
// taking the process down, which neither Follow nor RunDeadlines recover.
func TestPanickingAssociationIsPermanent(t *testing.T) {
	s := saga.New[caseState]("assocpanic")
	saga.On(s, func(e Opened) string { panic("no case in " + e.Case) }, func(context.Context, *saga.Scope[caseState], Opened) error {
		return nil
	}, saga.Starts())
	r := saga.NewRunner(s, saga.NewMemoryStore(), &recorder{})
	err := r.Handle(context.Background(), env(Opened{Case: "x"}))
	if !errors.Is(err, bus.ErrPermanent) || !strings.Contains(err.Error(), "no case in x") {
		t.Fatalf("Handle = %v, want a permanent error naming the panic", err)
	}
}

// TestDeadlineCommandsKeepTheTenant: a command a deadline sends acts for
// the tenant of the event that started the instance, on every store (the
// instance's document keeps it across processes).
func TestDeadlineCommandsKeepTheTenant(t *testing.T) {
	name := uniqueName("tenant")
	for _, b := range backends(t, name) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			clock := newFakeClock()
			rec := &recorder{}
			store := b.open(t)
			r := saga.NewRunner(newCaseSaga(name), store, rec, saga.WithClock(clock.Now))
			opened := env(Opened{Case: "t-" + b.name})
			opened.Metadata.TenantID = "tenant-7"
			if err := r.Handle(ctx, opened); err != nil {
				t.Fatal(err)
			}
			// Another runner, as another process would have, fires it.
			other := saga.NewRunner(newCaseSaga(name), store, rec, saga.WithClock(clock.Now))
			clock.Advance(16 * time.Minute)
			if n, err := other.FireDue(ctx); err != nil || n != 1 {
				t.Fatalf("FireDue = %d, %v; want 1 firing", n, err)
			}
			var expire *saga.PendingCommand
			for _, c := range rec.all() {
				if c.Type == "Expire" {
					expire = &c
				}
			}
			if expire == nil || expire.TenantID != "tenant-7" {
				t.Fatalf("the deadline's command %+v, want tenant-7", expire)
			}
		})
	}
}
