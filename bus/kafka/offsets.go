package kafka

import (
	"slices"
	"sync"
)

// partition tracks one assigned partition's fetched offsets and what has
// become of them, so that the committed offset only ever moves past
// offsets that are settled: handled, rescheduled or dead-lettered. Events
// of different aggregates finish out of order on the dispatcher's workers;
// a gap (an event still running, or released at Close) holds the commit
// back, so a crash re-delivers from the gap and skips nothing.
type partition struct {
	topic string
	id    int

	mu       sync.Mutex
	offsets  []int64 // fetched and not yet below the commit point, ascending
	settled  []bool  // parallel to offsets
	next     int64   // the commit point: every fetched offset below it is settled
	haveNext bool    // false until the first fetch or a committed offset is known
	open     int     // dispatched and not yet settled or released
	released int     // handed back at Close: never settled in this assignment
	wake     chan struct{}
}

func newPartition(topic string, id int, committed int64) *partition {
	p := &partition{topic: topic, id: id, wake: make(chan struct{}, 1)}
	if committed >= 0 { // kafka-go passes FirstOffset (-2) when the group has none
		p.next, p.haveNext = committed, true
	}
	return p
}

// fetched records an offset about to be dispatched. Offsets arrive in
// ascending order (one reader per partition).
func (p *partition) fetched(off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.haveNext {
		p.next, p.haveNext = off, true
	}
	p.offsets = append(p.offsets, off)
	p.settled = append(p.settled, false)
	p.open++
}

// settle marks offsets settled and moves the commit point past the
// settled prefix.
func (p *partition) settle(offs ...int64) {
	p.mu.Lock()
	for _, off := range offs {
		if i, ok := slices.BinarySearch(p.offsets, off); ok && !p.settled[i] {
			p.settled[i] = true
			p.open--
		}
	}
	n := 0
	for n < len(p.offsets) && p.settled[n] {
		n++
	}
	if n > 0 {
		p.next = p.offsets[n-1] + 1
		p.offsets = p.offsets[n:]
		p.settled = p.settled[n:]
	}
	p.mu.Unlock()
	p.signal()
}

// release counts offsets handed back unsettled: they stay below the
// commit point, for the next owner to fetch again.
func (p *partition) release(n int) {
	p.mu.Lock()
	p.open -= n
	p.released += n
	p.mu.Unlock()
	p.signal()
}

func (p *partition) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// commitPoint returns the offset to commit (the next one to read) and
// whether there is one.
func (p *partition) commitPoint() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next, p.haveNext
}

// pending returns how many dispatched offsets are neither settled nor
// released.
func (p *partition) pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}
