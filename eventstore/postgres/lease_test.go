package postgres_test

import (
	"testing"

	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/leasetest"
)

func TestLease(t *testing.T) {
	s, _ := newStore(t)
	leasetest.Run(t, func(t *testing.T) eventstore.Lease { return s.Lease() })
}
