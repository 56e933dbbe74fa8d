package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/eventsource-go/eventsource"
)

// OrderSummaryProjection keeps counts per status and the revenue of orders
// that were not cancelled.
type OrderSummaryProjection struct {
	mu     sync.Mutex
	orders map[string]orderState
	events int
}

func NewOrderSummaryProjection() *OrderSummaryProjection {
	return &OrderSummaryProjection{orders: map[string]orderState{}}
}

func (p *OrderSummaryProjection) EventTypes() []string {
	return []string{OrderPlaced{}.EventType(), OrderShipped{}.EventType(), OrderCancelled{}.EventType()}
}

func (p *OrderSummaryProjection) Handle(_ context.Context, env eventsource.Envelope) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events++
	o := p.orders[env.AggregateID]
	switch e := env.Event.(type) {
	case OrderPlaced:
		o = orderState{Status: statusPlaced, Customer: e.Customer, TotalCents: e.TotalCents}
	case OrderShipped:
		o.Status = statusShipped
	case OrderCancelled:
		o.Status = statusCancelled
	default:
		return fmt.Errorf("order summary: unexpected event %s", env.Type)
	}
	p.orders[env.AggregateID] = o
	return nil
}

func (p *OrderSummaryProjection) Reset(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.orders = map[string]orderState{}
	p.events = 0
	return nil
}

// Summary is the read model's answer.
type Summary struct {
	RevenueCents               int64
	Placed, Shipped, Cancelled int
	Events                     int
}

func (p *OrderSummaryProjection) Summary() Summary {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Summary{Events: p.events}
	for _, o := range p.orders {
		switch o.Status {
		case statusPlaced:
			s.Placed++
		case statusShipped:
			s.Shipped++
		case statusCancelled:
			s.Cancelled++
		}
		if o.Status != statusCancelled {
			s.RevenueCents += o.TotalCents
		}
	}
	return s
}

// Notifier sends a (pretend) confirmation for every placed order.
type Notifier struct {
	mu   sync.Mutex
	sent []string
}

func (n *Notifier) OnPlaced(_ context.Context, e OrderPlaced, _ eventsource.Envelope) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sent = append(n.sent, fmt.Sprintf("to %s: order %s confirmed", e.Customer, e.OrderID))
	return nil
}

func (n *Notifier) Sent() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.sent...)
}

// AuditLog records every event on the bus.
type AuditLog struct {
	mu      sync.Mutex
	entries []eventsource.Envelope
}

func (a *AuditLog) Handle(_ context.Context, env eventsource.Envelope) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.entries = append(a.entries, env)
	return nil
}

func (a *AuditLog) Entries() []eventsource.Envelope {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]eventsource.Envelope(nil), a.entries...)
}
