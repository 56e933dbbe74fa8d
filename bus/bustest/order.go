package bustest

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// testOrderWithinBatches publishes large batches, each carrying many
// events of every aggregate of its publisher, from several goroutines at
// once. A bus that spreads one Publish call over several connections,
// channels or partitions must still deliver each aggregate's events in
// order; OrderPerAggregate's small batches of distinct aggregates would
// not notice if it did not.
func (s *suite) testOrderWithinBatches(t *testing.T) {
	if !s.features.OrderingPerAggregate {
		t.Skip("bus does not declare ordering per aggregate")
	}
	b := s.open(t, namespace(t), "")
	rec := NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	const publishers, aggregates, perAggregate, batch = 4, 6, 40, 80
	want := make([][]eventsource.Envelope, publishers)
	for p := range publishers {
		for v := 1; v <= perAggregate; v++ {
			for a := range aggregates {
				want[p] = append(want[p], NewEnvelope(fmt.Sprintf("batch-%d-%d", p, a), int64(v), Ping{N: v}))
			}
		}
	}
	s.publishConcurrently(t, b, want, batch)
	all := slices.Concat(want...)
	rec.WaitFor(t, len(all), s.features.Timeout)
	s.drain(t, b)
	got := rec.Got()
	assertSameSet(t, "ordering within batches", got, all)
	assertVersionsInOrder(t, got)
}

// assertVersionsInOrder fails t unless every aggregate's events in got
// come as versions 1, 2, 3… with no gap or repeat.
func assertVersionsInOrder(t *testing.T, got []eventsource.Envelope) {
	t.Helper()
	last := map[string]int64{}
	for _, e := range got {
		if e.Version != last[e.AggregateID]+1 {
			t.Fatalf("aggregate %s: version %d arrived after %d", e.AggregateID, e.Version, last[e.AggregateID])
		}
		last[e.AggregateID] = e.Version
	}
}

// publishConcurrently publishes each of parts from a goroutine of its own,
// batch events per Publish call, and fails t with the first error.
func (s *suite) publishConcurrently(t *testing.T, b bus.Bus, parts [][]eventsource.Envelope, batch int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(parts))
	for _, part := range parts {
		wg.Go(func() {
			for chunk := range slices.Chunk(part, batch) {
				if err := b.Publish(s.ctx(t), chunk...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}
}
