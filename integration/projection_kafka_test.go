package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	kafkabus "github.com/eventsource-go/eventsource/bus/kafka"
)

// orderedTotals is a projection shared by the members of a group (one
// read model): it applies each event once, and records any event that
// arrives out of its aggregate's order.
type orderedTotals struct {
	mu       sync.Mutex
	last     map[string]int64 // aggregate → last version applied
	applied  map[uuid.UUID]int
	byMember map[string]int
	outOfOrd int
}

func newOrderedTotals() *orderedTotals {
	return &orderedTotals{last: map[string]int64{}, applied: map[uuid.UUID]int{}, byMember: map[string]int{}}
}

// member returns the projection handler one group member subscribes.
func (o *orderedTotals) member(name string) bus.Projection {
	return memberProjection{o: o, name: name}
}

type memberProjection struct {
	o    *orderedTotals
	name string
}

func (memberProjection) EventTypes() []string { return []string{bustest.Ping{}.EventType()} }
func (m memberProjection) Handle(_ context.Context, env eventsource.Envelope) error {
	o := m.o
	o.mu.Lock()
	defer o.mu.Unlock()
	if env.Version != o.last[env.AggregateID]+1 {
		o.outOfOrd++
	}
	o.last[env.AggregateID] = max(o.last[env.AggregateID], env.Version)
	o.applied[env.ID]++
	o.byMember[m.name]++
	return nil
}

func (o *orderedTotals) distinct() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.applied)
}

// The recipe of the projection package doc: a projection scaled over two
// instances as two members of one consumer group on the Kafka bus, each
// subscribing it with bus.SubscribeProjection. Every event is applied
// once, each aggregate's events in order, and both members share the work.
func TestProjectionScalesOverKafkaGroup(t *testing.T) {
	env := newKafkaEnv(t, kafkaBrokers(t))
	pub := env.open(t, kafkabus.Config{Group: "publisher"})
	model := newOrderedTotals()
	var members []*kafkabus.Bus
	for _, name := range []string{"m1", "m2"} {
		m := env.open(t, kafkabus.Config{Group: "totals"})
		if _, err := bus.SubscribeProjection(m, model.member(name)); err != nil {
			t.Fatal(err)
		}
		bustest.Start(t, m)
		members = append(members, m)
	}
	// Both members joined before anything is published, so the group
	// does not rebalance mid-stream.
	waitFor(t, time.Minute, "both members assigned partitions", func() bool {
		return members[0].Generations() >= 1 && members[1].Generations() >= 1
	})
	const n, aggregates = 4000, 40
	evs := events(n, aggregates, "proj")
	publishAll(t, pub, evs, 200)
	waitFor(t, 2*time.Minute, "every event applied", func() bool { return model.distinct() >= n })
	for _, b := range append(members, pub) {
		closeBus(t, b)
	}
	abandoned := members[0].Abandoned() + members[1].Abandoned()
	model.mu.Lock()
	defer model.mu.Unlock()
	dups := 0
	for _, e := range evs {
		switch c := model.applied[e.ID]; {
		case c == 0:
			t.Fatalf("event %s never applied", e.ID)
		case c > 1:
			dups += c - 1
		}
	}
	t.Logf("members applied %v; %d duplicates (%d abandoned at a rebalance); %d out of order", model.byMember, dups, abandoned, model.outOfOrd)
	// A rebalance that lands mid-stream hands what a member had not
	// committed to the other (at-least-once); nothing else is repeated.
	if uint64(dups) > abandoned {
		t.Errorf("%d events applied more than once, more than the %d abandoned at a rebalance", dups, abandoned)
	}
	if model.outOfOrd != 0 {
		t.Errorf("%d events applied out of their aggregate's order", model.outOfOrd)
	}
	if model.byMember["m1"] == 0 || model.byMember["m2"] == 0 {
		t.Errorf("the members did not share the work: %v", model.byMember)
	}
}
