package main

import (
	"context"
	"errors"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/saga"
)

// The payment process: a saga asks for a payment when an order is placed,
// cancels the order when the payment is declined (compensation), and
// cancels it when no payment arrives within PaymentTimeout.

// PaymentTimeout is how long the saga waits for a payment.
const PaymentTimeout = 15 * time.Minute

// Events of a Payment, whose ID is its order's.
type (
	PaymentRequested struct {
		OrderID     string `json:"order_id"`
		AmountCents int64  `json:"amount_cents"`
	}
	PaymentReceived struct {
		OrderID string `json:"order_id"`
	}
	PaymentDeclined struct {
		OrderID string `json:"order_id"`
		Reason  string `json:"reason"`
	}
)

func (PaymentRequested) EventType() string { return "PaymentRequested" }
func (PaymentReceived) EventType() string  { return "PaymentReceived" }
func (PaymentDeclined) EventType() string  { return "PaymentDeclined" }

func registerPaymentEvents(r *eventsource.Registry) {
	eventsource.MustRegister[PaymentRequested](r)
	eventsource.MustRegister[PaymentReceived](r)
	eventsource.MustRegister[PaymentDeclined](r)
}

// Errors for commands a payment refuses.
var (
	ErrPaymentRequested = errors.New("payment already requested")
	ErrPaymentSettled   = errors.New("payment already settled")
	ErrNoPayment        = errors.New("no payment requested")
)

// Payment is the aggregate of one order's payment.
type Payment struct {
	aggregate.Base
	requested, settled bool
}

func newPayment() *Payment { return &Payment{} }

func (p *Payment) AggregateType() string { return "Payment" }

func (p *Payment) Apply(e eventsource.Event) {
	switch e.(type) {
	case PaymentRequested:
		p.requested = true
	case PaymentReceived, PaymentDeclined:
		p.settled = true
	}
}

func (p *Payment) Request(amountCents int64) error {
	if p.requested {
		return ErrPaymentRequested
	}
	aggregate.Raise(p, PaymentRequested{OrderID: p.ID(), AmountCents: amountCents})
	return nil
}

func (p *Payment) Receive() error {
	if err := p.settle(); err != nil {
		return err
	}
	aggregate.Raise(p, PaymentReceived{OrderID: p.ID()})
	return nil
}

func (p *Payment) Decline(reason string) error {
	if err := p.settle(); err != nil {
		return err
	}
	aggregate.Raise(p, PaymentDeclined{OrderID: p.ID(), Reason: reason})
	return nil
}

func (p *Payment) settle() error {
	switch {
	case !p.requested:
		return ErrNoPayment
	case p.settled:
		return ErrPaymentSettled
	}
	return nil
}

// Commands the saga sends.
type (
	RequestPayment struct {
		OrderID     string `json:"order_id"`
		AmountCents int64  `json:"amount_cents"`
	}
	CancelOrder struct {
		OrderID string `json:"order_id"`
		Reason  string `json:"reason"`
	}
)

func (RequestPayment) CommandType() string { return "RequestPayment" }
func (CancelOrder) CommandType() string    { return "CancelOrder" }

// paymentState is what the saga keeps per order between events.
type paymentState struct {
	AmountCents int64  `json:"amount_cents"`
	Outcome     string `json:"outcome,omitempty"` // paid, declined, timed out
}

// The reasons the saga gives when it cancels an order.
const (
	reasonDeclined = "payment declined"
	reasonTimeout  = "payment timeout"
)

// newPaymentSaga defines the process; it is instantiated per order.
func newPaymentSaga() *saga.Saga[paymentState] {
	// readme-saga {
	s := saga.New[paymentState]("payment")
	saga.On(s, func(e OrderPlaced) string { return e.OrderID },
		func(_ context.Context, sc *saga.Scope[paymentState], e OrderPlaced) error {
			sc.State.AmountCents = e.TotalCents
			sc.Dispatch(RequestPayment{OrderID: e.OrderID, AmountCents: e.TotalCents})
			sc.Schedule("payment-timeout", PaymentTimeout)
			return nil
		}, saga.Starts())
	saga.On(s, func(e PaymentReceived) string { return e.OrderID },
		func(_ context.Context, sc *saga.Scope[paymentState], _ PaymentReceived) error {
			sc.State.Outcome = "paid"
			return nil
		}, saga.Ends())
	saga.On(s, func(e PaymentDeclined) string { return e.OrderID },
		func(_ context.Context, sc *saga.Scope[paymentState], e PaymentDeclined) error {
			sc.State.Outcome = "declined"
			sc.Dispatch(CancelOrder{OrderID: e.OrderID, Reason: reasonDeclined})
			return nil
		}, saga.Ends())
	saga.OnDeadline(s, "payment-timeout", func(_ context.Context, sc *saga.Scope[paymentState], _ saga.Deadline) error {
		sc.State.Outcome = "timed out"
		sc.Dispatch(CancelOrder{OrderID: sc.ID(), Reason: reasonTimeout})
		sc.End()
		return nil
	})
	// readme-saga }
	return s
}

// orderRepository and paymentRepository are what the command handlers
// need of repository.Repository.
type (
	orderRepository interface {
		Load(ctx context.Context, id string) (*Order, error)
		Save(ctx context.Context, o *Order) error
	}
	paymentRepository interface {
		Load(ctx context.Context, id string) (*Payment, error)
		Save(ctx context.Context, p *Payment) error
	}
)

// paymentCommands routes the saga's commands to the aggregates. Each is
// idempotent: a command repeated after a crash finds its work done.
func paymentCommands(orders orderRepository, payments paymentRepository) *saga.Commands {
	cmds := saga.NewCommands()
	saga.Handle(cmds, func(ctx context.Context, c RequestPayment) error {
		p, err := payments.Load(ctx, c.OrderID)
		if errors.Is(err, eventsource.ErrNotFound) {
			p, err = newPayment(), nil
			p.SetID(c.OrderID)
		}
		if err != nil {
			return err
		}
		if err := p.Request(c.AmountCents); errors.Is(err, ErrPaymentRequested) {
			return nil
		} else if err != nil {
			return err
		}
		err = payments.Save(ctx, p)
		if errors.Is(err, eventsource.ErrConcurrencyConflict) {
			return nil // requested meanwhile by a repeat of this command
		}
		return err
	})
	saga.Handle(cmds, func(ctx context.Context, c CancelOrder) error {
		o, err := orders.Load(ctx, c.OrderID)
		if err != nil {
			return err
		}
		switch err := o.Cancel(c.Reason); {
		case errors.Is(err, ErrCancelled), errors.Is(err, ErrShipped):
			return nil // done already, or too late to compensate
		case err != nil:
			return err
		}
		return orders.Save(ctx, o)
	})
	return cmds
}
