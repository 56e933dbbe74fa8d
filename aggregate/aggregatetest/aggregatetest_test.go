package aggregatetest_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/aggregate/aggregatetest"
)

type Opened struct{ Owner string }
type Deposited struct{ Cents int }

func (Opened) EventType() string    { return "Opened" }
func (Deposited) EventType() string { return "Deposited" }

var errClosed = errors.New("account not open")

type Account struct {
	aggregate.Base
	open    bool
	balance int
}

func (*Account) AggregateType() string { return "Account" }
func (a *Account) Apply(e eventsource.Event) {
	switch e := e.(type) {
	case Opened:
		a.open = true
	case Deposited:
		a.balance += e.Cents
	}
}

func (a *Account) Deposit(cents int) error {
	if !a.open {
		return errClosed
	}
	aggregate.Raise(a, Deposited{Cents: cents})
	return nil
}

func newAccount() *Account { return &Account{} }

func TestGivenWhenThen(t *testing.T) {
	aggregatetest.For(t, newAccount).
		Given(Opened{Owner: "ada"}, Deposited{Cents: 5}).
		When(func(a *Account) error { return a.Deposit(10) }).
		Then(Deposited{Cents: 10})
	aggregatetest.For(t, newAccount).
		When(func(a *Account) error { return a.Deposit(10) }).
		ThenError(errClosed)
}

// recorder is a testing.TB that keeps the failure messages.
type recorder struct {
	testing.TB
	msgs []string
}

func (r *recorder) Helper()                      {}
func (r *recorder) Errorf(f string, args ...any) { r.msgs = append(r.msgs, fmt.Sprintf(f, args...)) }

func TestFailureShowsADiff(t *testing.T) {
	rec := &recorder{}
	aggregatetest.For(rec, newAccount).
		Given(Opened{Owner: "ada"}).
		When(func(a *Account) error { return a.Deposit(10) }).
		Then(Deposited{Cents: 11})
	want := "then: raised events differ (- want, + got):\n  - Deposited {\"Cents\":11}\n  + Deposited {\"Cents\":10}\n"
	if len(rec.msgs) != 1 || rec.msgs[0] != want {
		t.Fatalf("failure message %q, want %q", rec.msgs, want)
	}
	rec.msgs = nil
	aggregatetest.For(rec, newAccount).Given(Opened{}).When(func(a *Account) error { return a.Deposit(1) }).ThenError(errClosed)
	if len(rec.msgs) != 1 || !strings.Contains(rec.msgs[0], "succeeded") || !strings.Contains(rec.msgs[0], `Deposited {"Cents":1}`) {
		t.Fatalf("failure message %q", rec.msgs)
	}
}

func Example() {
	t := &testing.T{} // in a test: the test's *testing.T
	aggregatetest.For(t, newAccount).
		Given(Opened{Owner: "ada"}).
		When(func(a *Account) error { return a.Deposit(10) }).
		Then(Deposited{Cents: 10})
	fmt.Println("failed:", t.Failed())
	// Output: failed: false
}

// Shipped keeps its carrier in an unexported field, which JSON, and so the
// store, drops.
type Shipped struct{ carrier string }

func (Shipped) EventType() string { return "Shipped" }

type Confirmed struct{ Carrier string }

func (Confirmed) EventType() string { return "Confirmed" }

type Parcel struct {
	aggregate.Base
	carrier string
}

func (*Parcel) AggregateType() string { return "Parcel" }
func (p *Parcel) Apply(e eventsource.Event) {
	if e, ok := e.(Shipped); ok {
		p.carrier = e.carrier
	}
}

// TestGivenAsLoadedFromTheStore: an aggregate that reads what its events'
// JSON drops passes no test that production would fail: the given events
// reach it as the store gives them back.
func TestGivenAsLoadedFromTheStore(t *testing.T) {
	rec := &recorder{}
	aggregatetest.For(rec, func() *Parcel { return &Parcel{} }).
		Given(Shipped{carrier: "UPS"}).
		When(func(p *Parcel) error { aggregate.Raise(p, Confirmed{Carrier: p.carrier}); return nil }).
		Then(Confirmed{Carrier: "UPS"})
	if len(rec.msgs) != 1 || !strings.Contains(rec.msgs[0], `+ Confirmed {"Carrier":""}`) {
		t.Fatalf("failure messages %q, want the carrier lost as in production", rec.msgs)
	}
}
