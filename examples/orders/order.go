package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
)

// Domain events of an order. Plain structs: the type name is what is stored.
type (
	OrderPlaced struct {
		OrderID    string `json:"order_id"`
		Customer   string `json:"customer"`
		TotalCents int64  `json:"total_cents"`
	}
	OrderShipped struct {
		OrderID string `json:"order_id"`
		Carrier string `json:"carrier"`
	}
	OrderCancelled struct {
		OrderID string `json:"order_id"`
		Reason  string `json:"reason"`
	}
)

func (OrderPlaced) EventType() string    { return "OrderPlaced" }
func (OrderShipped) EventType() string   { return "OrderShipped" }
func (OrderCancelled) EventType() string { return "OrderCancelled" }

func registerOrderEvents(r *eventsource.Registry) {
	eventsource.MustRegister[OrderPlaced](r)
	eventsource.MustRegister[OrderShipped](r)
	eventsource.MustRegister[OrderCancelled](r)
	registerOrderEvolution(r) // OrderRepriced and the step that reads its dollar-priced past (doc_evolution.go)
}

// Errors for commands an order refuses.
var (
	ErrAlreadyPlaced = errors.New("order already placed")
	ErrNotPlaced     = errors.New("order not placed")
	ErrShipped       = errors.New("order already shipped")
	ErrCancelled     = errors.New("order cancelled")
	ErrInvalidTotal  = errors.New("order total must be positive")
)

type orderStatus string

const (
	statusNew       orderStatus = ""
	statusPlaced    orderStatus = "placed"
	statusShipped   orderStatus = "shipped"
	statusCancelled orderStatus = "cancelled"
)

// Order is the aggregate: commands validate, then raise events; Apply
// changes state and never fails.
type Order struct {
	aggregate.Base
	state orderState
}

type orderState struct {
	Status     orderStatus `json:"status"`
	Customer   string      `json:"customer"`
	TotalCents int64       `json:"total_cents"`
}

func newOrder() *Order { return &Order{} }

func (o *Order) AggregateType() string { return "Order" }

func (o *Order) Apply(e eventsource.Event) {
	switch e := e.(type) {
	case OrderPlaced:
		o.state = orderState{Status: statusPlaced, Customer: e.Customer, TotalCents: e.TotalCents}
	case OrderShipped:
		o.state.Status = statusShipped
	case OrderCancelled:
		o.state.Status = statusCancelled
	}
}

func (o *Order) Place(customer string, totalCents int64) error {
	if o.state.Status != statusNew {
		return ErrAlreadyPlaced
	}
	if totalCents <= 0 {
		return fmt.Errorf("%w: %d", ErrInvalidTotal, totalCents)
	}
	aggregate.Raise(o, OrderPlaced{OrderID: o.ID(), Customer: customer, TotalCents: totalCents})
	return nil
}

func (o *Order) Ship(carrier string) error {
	switch o.state.Status {
	case statusNew:
		return ErrNotPlaced
	case statusShipped:
		return ErrShipped
	case statusCancelled:
		return ErrCancelled
	}
	aggregate.Raise(o, OrderShipped{OrderID: o.ID(), Carrier: carrier})
	return nil
}

func (o *Order) Cancel(reason string) error {
	switch o.state.Status {
	case statusNew:
		return ErrNotPlaced
	case statusShipped:
		return ErrShipped
	case statusCancelled:
		return ErrCancelled
	}
	aggregate.Raise(o, OrderCancelled{OrderID: o.ID(), Reason: reason})
	return nil
}

// Snapshots: the state is small, but this shows the shape.
func (o *Order) SnapshotSchema() int                 { return 1 }
func (o *Order) MarshalSnapshot() ([]byte, error)    { return json.Marshal(o.state) }
func (o *Order) UnmarshalSnapshot(data []byte) error { return json.Unmarshal(data, &o.state) }
