package sagatest_test

// The kit from a user's side: every wrong expectation fails the test with
// a readable diff, and no right one fails.

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/saga"
	"github.com/eventsource-go/eventsource/saga/sagatest"
)

// fakeTB records failures; Fatalf ends the goroutine as testing.T's does.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	failed bool
	msgs   []string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = true
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Fatalf(format string, args ...any) { f.Errorf(format, args...); runtime.Goexit() }
func (f *fakeTB) Failed() bool                      { f.mu.Lock(); defer f.mu.Unlock(); return f.failed }

// kit runs fn against a fakeTB in a goroutine of its own (Fatalf ends it)
// and returns what it recorded.
func kit(fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

// mustFail fails t unless fn failed its fakeTB with a message containing
// every one of want.
func mustFail(t *testing.T, what string, fn func(tb testing.TB), want ...string) {
	t.Helper()
	f := kit(fn)
	if !f.Failed() {
		t.Errorf("%s: the kit passed, want a failure", what)
		return
	}
	msg := strings.Join(f.msgs, "\n")
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: failure message lacks %q:\n%s", what, w, msg)
		}
	}
	t.Logf("%s:\n%s", what, msg)
}

func mustPass(t *testing.T, what string, fn func(tb testing.TB)) {
	t.Helper()
	if f := kit(fn); f.Failed() {
		t.Errorf("%s: the kit failed, want a pass:\n%s", what, strings.Join(f.msgs, "\n"))
	}
}

// A payment saga: a reminder 15 minutes after the order, and a
// cancellation 15 minutes after the reminder.

type OrderPlaced struct{ OrderID string }
type OrderPaid struct{ OrderID string }

func (OrderPlaced) EventType() string { return "OrderPlaced" }
func (OrderPaid) EventType() string   { return "OrderPaid" }

type RemindCustomer struct{ OrderID string }
type CancelOrder struct{ OrderID string }

func (RemindCustomer) CommandType() string { return "RemindCustomer" }
func (CancelOrder) CommandType() string    { return "CancelOrder" }

type payment struct{ OrderID string }

func paymentSaga() *saga.Saga[payment] {
	s := saga.New[payment]("payment")
	saga.On(s, func(e OrderPlaced) string { return e.OrderID },
		func(_ context.Context, sc *saga.Scope[payment], e OrderPlaced) error {
			sc.State.OrderID = e.OrderID
			sc.Schedule("remind", 15*time.Minute)
			return nil
		}, saga.Starts())
	saga.On(s, func(e OrderPaid) string { return e.OrderID },
		func(context.Context, *saga.Scope[payment], OrderPaid) error { return nil }, saga.Ends())
	saga.OnDeadline(s, "remind", func(_ context.Context, sc *saga.Scope[payment], _ saga.Deadline) error {
		sc.Dispatch(RemindCustomer{OrderID: sc.State.OrderID})
		sc.Schedule("cancel", 15*time.Minute)
		return nil
	})
	saga.OnDeadline(s, "cancel", func(_ context.Context, sc *saga.Scope[payment], _ saga.Deadline) error {
		sc.Dispatch(CancelOrder{OrderID: sc.State.OrderID})
		sc.End()
		return nil
	})
	return s
}

func TestSagaKitFailsWrongExpectations(t *testing.T) {
	placed := func(tb testing.TB) *sagatest.Scenario[payment] {
		return sagatest.For(tb, paymentSaga()).Given(OrderPlaced{OrderID: "o1"})
	}
	mustPass(t, "right deadlines", func(tb testing.TB) {
		sagatest.For(tb, paymentSaga()).When(OrderPlaced{OrderID: "o1"}).
			ThenCommands().ThenDeadlines(sagatest.Deadline("remind", "o1", 15*time.Minute))
	})
	mustFail(t, "a deadline due at another time", func(tb testing.TB) {
		sagatest.For(tb, paymentSaga()).When(OrderPlaced{OrderID: "o1"}).
			ThenDeadlines(sagatest.Deadline("remind", "o1", 16*time.Minute))
	}, "- remind of o1 in 16m0s", "+ remind of o1 in 15m0s")
	mustFail(t, "a deadline missing", func(tb testing.TB) {
		sagatest.For(tb, paymentSaga()).When(OrderPlaced{OrderID: "o1"}).ThenDeadlines()
	}, "+ remind of o1 in 15m0s")
	mustFail(t, "a command missing", func(tb testing.TB) {
		placed(tb).WhenTimePasses(15 * time.Minute).ThenCommands()
	}, `+ RemindCustomer {"OrderID":"o1"}`)
	mustFail(t, "a command not sent", func(tb testing.TB) {
		placed(tb).WhenTimePasses(14 * time.Minute).ThenCommands(RemindCustomer{OrderID: "o1"})
	}, `- RemindCustomer {"OrderID":"o1"}`)
}

// TestSagaKitEndedUnknownInstance: ThenEnded("o2", false) for an instance
// that never existed (a typo) must fail, not pass as "not ended".
func TestSagaKitEndedUnknownInstance(t *testing.T) {
	mustFail(t, "an unknown instance is not 'not ended'", func(tb testing.TB) {
		sagatest.For(tb, paymentSaga()).Given(OrderPlaced{OrderID: "o1"}).
			When(OrderPaid{OrderID: "o1"}).ThenEnded("o1", true).ThenEnded("o2", false)
	}, "o2")
}

// TestSagaKitTimePassesThroughDeadlines: half an hour after the order, the
// reminder has fired at 15 minutes and the cancellation it scheduled at 30,
// as a runner on a real clock does; the fake clock must not jump over the
// second deadline by firing the first at the end of the interval.
func TestSagaKitTimePassesThroughDeadlines(t *testing.T) {
	mustPass(t, "deadlines fire at their due times", func(tb testing.TB) {
		sagatest.For(tb, paymentSaga()).Given(OrderPlaced{OrderID: "o1"}).
			WhenTimePasses(30*time.Minute).
			ThenCommands(RemindCustomer{OrderID: "o1"}, CancelOrder{OrderID: "o1"}).
			ThenDeadlines().
			ThenEnded("o1", true)
	})
}
