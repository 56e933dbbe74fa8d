package eventstore_test

import (
	"testing"

	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/leasetest"
)

func TestMemoryLease(t *testing.T) {
	leasetest.Run(t, func(t *testing.T) eventstore.Lease { return eventstore.NewMemoryLease() })
}
