package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/aggregate/aggregatetest"
	"github.com/eventsource-go/eventsource/saga/sagatest"
)

func TestOrderGivenWhenThen(t *testing.T) {
	aggregatetest.For(t, newOrder).WithID("o1").
		Given(OrderPlaced{OrderID: "o1", Customer: "a@example.com", TotalCents: 100}).
		When(func(o *Order) error { return o.Cancel(reasonDeclined) }).
		Then(OrderCancelled{OrderID: "o1", Reason: reasonDeclined})
	aggregatetest.For(t, newOrder).WithID("o1").
		Given(OrderPlaced{OrderID: "o1", TotalCents: 100}, OrderShipped{OrderID: "o1", Carrier: "DHL"}).
		When(func(o *Order) error { return o.Cancel(reasonTimeout) }).
		ThenError(ErrShipped)
}

func TestPaymentGivenWhenThen(t *testing.T) {
	aggregatetest.For(t, newPayment).WithID("o1").
		When(func(p *Payment) error { return p.Request(500) }).
		Then(PaymentRequested{OrderID: "o1", AmountCents: 500})
	aggregatetest.For(t, newPayment).WithID("o1").
		Given(PaymentRequested{OrderID: "o1", AmountCents: 500}, PaymentReceived{OrderID: "o1"}).
		When(func(p *Payment) error { return p.Decline("late") }).
		ThenError(ErrPaymentSettled)
}

func TestPaymentSagaRequestsPaymentAndWaits(t *testing.T) {
	sagatest.For(t, newPaymentSaga()).
		When(OrderPlaced{OrderID: "o1", TotalCents: 2500}).
		ThenCommands(RequestPayment{OrderID: "o1", AmountCents: 2500}).
		ThenDeadlines(sagatest.Deadline("payment-timeout", "o1", PaymentTimeout))
}

func TestPaymentSagaCompensatesADeclinedPayment(t *testing.T) {
	sagatest.For(t, newPaymentSaga()).
		Given(OrderPlaced{OrderID: "o1", TotalCents: 2500}).
		When(PaymentDeclined{OrderID: "o1", Reason: "card expired"}).
		ThenCommands(CancelOrder{OrderID: "o1", Reason: reasonDeclined}).
		ThenDeadlines().
		ThenEnded("o1", true)
}

func TestPaymentSagaCancelsAnOrderNeverPaid(t *testing.T) {
	sc := sagatest.For(t, newPaymentSaga()).
		Given(OrderPlaced{OrderID: "o1", TotalCents: 2500}, OrderPlaced{OrderID: "o2", TotalCents: 100})
	sc.When(PaymentReceived{OrderID: "o2"}).
		ThenCommands().
		ThenDeadlines(sagatest.Deadline("payment-timeout", "o1", PaymentTimeout))
	sc.WhenTimePasses(PaymentTimeout - time.Second).ThenCommands()
	sc.WhenTimePasses(time.Second).
		ThenCommands(CancelOrder{OrderID: "o1", Reason: reasonTimeout}).
		ThenDeadlines().
		ThenState("o1", paymentState{AmountCents: 2500, Outcome: "timed out"})
}

// The saga's figures, printed after the tutorial's on every store.
var wantPaymentFigures = []string{
	"payments requested: 3\n",
	"paid: 1, declined: 1, timed out: 1\n",
	"orders cancelled by the saga: 2 (1 payment declined, 1 payment timeout)\n",
	"commands dispatched: 3 RequestPayment, 2 CancelOrder\n",
}

func TestWalkthroughPrintsPaymentFigures(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-store", "memory"}, &out, io.Discard); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	tutorial, payment, ok := strings.Cut(text, "\npayment saga:")
	if !ok {
		t.Fatalf("no payment saga section:\n%s", text)
	}
	for _, want := range wantFigures {
		if !strings.Contains(tutorial, want) {
			t.Errorf("the tutorial's section lacks %q:\n%s", want, text)
		}
	}
	for _, want := range wantPaymentFigures {
		if !strings.Contains(payment, want) {
			t.Errorf("the payment section lacks %q:\n%s", want, text)
		}
	}
}
