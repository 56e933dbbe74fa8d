package main

import (
	"fmt"
	"math"

	"github.com/eventsource-go/eventsource"
)

// OrderRepriced is the current shape of a price change: whole cents and a
// currency, at schema version 2. Version 1 held a price in dollars as a
// JSON number ({"order_id":"o-1","price":19.99}), which rounds badly and
// cannot say which currency it is in.
type OrderRepriced struct {
	OrderID  string `json:"order_id"`
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
}

func (OrderRepriced) EventType() string { return "OrderRepriced" }

// readme-evolution {
func (OrderRepriced) SchemaVersion() int { return 2 } // version 1 was {"order_id":"o-1","price":19.99}

// readme-evolution }

// orderRepricedV1 is the old shape, kept only for its upcaster.
type orderRepricedV1 struct {
	OrderID string  `json:"order_id"`
	Price   float64 `json:"price"`
}

// registerOrderEvolution registers OrderRepriced with the step that reads
// its version-1 events: every order that ever changed price was in US
// dollars then.
func registerOrderEvolution(r *eventsource.Registry) {
	// readme-evolution {
	eventsource.MustRegister[OrderRepriced](r)
	r.MustRegisterUpcaster("OrderRepriced", 1, eventsource.TypedUpcaster(func(old orderRepricedV1) (OrderRepriced, error) {
		if old.Price < 0 || old.Price > math.MaxInt64/100 {
			return OrderRepriced{}, fmt.Errorf("price %v out of range", old.Price)
		}
		return OrderRepriced{OrderID: old.OrderID, Cents: int64(math.Round(old.Price * 100)), Currency: "USD"}, nil
	}))
	// readme-evolution }
}
