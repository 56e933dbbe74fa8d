package eventstore

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore/internal/prep"
)

// chunkShift sets the size of the blocks the memory log is kept in (1<<10
// records). Fixed-size blocks mean the log never copies what it already
// holds as it grows, so a long append run has no pauses proportional to
// the store's size.
const (
	chunkShift = 10
	chunkSize  = 1 << chunkShift
	chunkMask  = chunkSize - 1
)

// Memory is an in-memory Store for tests, examples and single-process use.
// It is safe for concurrent use. Nothing survives the process.
//
// Envelopes are copied in and out (including Metadata.Extra), so callers
// cannot change what is stored. The Event payload itself is kept as given:
// a payload that is a pointer must not be mutated after Append.
//
// Readers copy a snapshot of the log's bounds under a read lock and iterate
// without holding it; the log is append-only, so entries inside a snapshot
// never change. A handler may therefore Append while it ranges over Load or
// ReadAll.
type Memory struct {
	mu      sync.RWMutex
	chunks  [][]record         // position p is chunks[(p-1)>>chunkShift][(p-1)&chunkMask]
	count   int64              // last position
	streams map[string][]int64 // stream ID -> positions of its events, index = version-1
	notify  Announcer          // subscribers to appends (OnAppend)
}

// record is an envelope as the log keeps it: half the size of an Envelope,
// since a store that holds millions of events is bound by memory traffic.
// The position is the record's index in the log and the type name is the
// event's (Append checks that they agree).
type record struct {
	id            uuid.UUID
	aggregateType string
	aggregateID   string
	version       int64
	occurredAt    time.Time
	metadata      *eventsource.Metadata // nil when zero, which is the common case
	event         eventsource.Event
}

var (
	_ Store      = (*Memory)(nil)
	_ Notifier   = (*Memory)(nil)
	_ RawReader  = (*Memory)(nil)
	_ HeadReader = (*Memory)(nil)
)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{streams: make(map[string][]int64)}
}

// Append implements Store.
func (m *Memory) Append(ctx context.Context, streamID string, expectedVersion int64, events []eventsource.Envelope) ([]eventsource.Envelope, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := prep.ExpectedVersion(expectedVersion); err != nil {
		return nil, err
	}
	// Validate and copy outside the lock; only numbering and storing need it.
	out, err := prep.Batch(events)
	if err != nil {
		return nil, err
	}
	var metadata []*eventsource.Metadata // the store's copies, if any event has metadata
	for i := range out {
		if out[i].Metadata.IsZero() {
			continue
		}
		if metadata == nil {
			metadata = make([]*eventsource.Metadata, len(out))
		}
		md := out[i].Metadata
		prep.CloneExtra(&md) // the caller keeps its Extra map
		metadata[i] = &md
	}

	var head int64
	// Runs after the unlock below: subscribers then read what was stored.
	defer func() {
		if head > 0 {
			m.notify.Announce(head)
		}
	}()
	m.mu.Lock()
	defer m.mu.Unlock()
	positions := m.streams[streamID]
	current := int64(len(positions))
	if expectedVersion != AnyVersion && expectedVersion != current {
		return nil, &eventsource.ConflictError{StreamID: streamID, Expected: expectedVersion, Actual: current}
	}
	if len(out) == 0 {
		return out, nil
	}
	positions = slices.Grow(positions, len(out))
	for i := range out {
		out[i].Version = current + int64(i) + 1
		out[i].Position = m.count + int64(i) + 1
		positions = append(positions, out[i].Position)
	}
	m.streams[streamID] = positions
	m.store(out, metadata)
	head = m.count
	return out, nil
}

// OnAppend implements Notifier: fn is called after each Append with the
// position of its last event.
func (m *Memory) OnAppend(fn func(head int64)) (stop func()) { return m.notify.OnAppend(fn) }

// store adds batch to the end of the log, block by block; m.mu must be
// held for writing. Readers' snapshots end before m.count, so the entries
// written here are not visible to any of them.
func (m *Memory) store(batch []eventsource.Envelope, metadata []*eventsource.Metadata) {
	for len(batch) > 0 {
		off := m.count & chunkMask
		if off == 0 {
			m.chunks = append(m.chunks, make([]record, chunkSize))
		}
		dst := m.chunks[len(m.chunks)-1][off:]
		n := min(len(dst), len(batch))
		for i := range n {
			env := &batch[i]
			r := &dst[i]
			r.id = env.ID
			r.aggregateType = env.AggregateType
			r.aggregateID = env.AggregateID
			r.version = env.Version
			r.occurredAt = env.OccurredAt
			r.event = env.Event
			if metadata != nil {
				r.metadata = metadata[i]
			}
		}
		batch = batch[n:]
		if metadata != nil {
			metadata = metadata[n:]
		}
		m.count += int64(n)
	}
}

// Load implements Store.
func (m *Memory) Load(ctx context.Context, streamID string, fromVersion int64) iter.Seq2[eventsource.Envelope, error] {
	return func(yield func(eventsource.Envelope, error) bool) {
		if err := ctx.Err(); err != nil {
			yield(eventsource.Envelope{}, err)
			return
		}
		m.mu.RLock()
		positions := m.streams[streamID]
		chunks := m.chunks
		m.mu.RUnlock()

		first := max(fromVersion, 1)
		for v := first; v <= int64(len(positions)); v++ {
			if err := ctx.Err(); err != nil {
				yield(eventsource.Envelope{}, err)
				return
			}
			if !yield(at(chunks, positions[v-1]), nil) {
				return
			}
		}
	}
}

// Head implements HeadReader.
func (m *Memory) Head(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.count, nil
}

// ReadAll implements Store.
func (m *Memory) ReadAll(ctx context.Context, fromPosition int64) iter.Seq2[eventsource.Envelope, error] {
	return func(yield func(eventsource.Envelope, error) bool) {
		if err := ctx.Err(); err != nil {
			yield(eventsource.Envelope{}, err)
			return
		}
		m.mu.RLock()
		count := m.count
		chunks := m.chunks
		m.mu.RUnlock()

		for p := max(fromPosition, 1); p <= count; p++ {
			if err := ctx.Err(); err != nil {
				yield(eventsource.Envelope{}, err)
				return
			}
			if !yield(at(chunks, p), nil) {
				return
			}
		}
	}
}

// ReadAllRaw implements RawReader. The memory store keeps Go values, so
// it encodes each payload here: it saves a forwarder nothing, but
// behaves as the durable stores do.
func (m *Memory) ReadAllRaw(ctx context.Context, fromPosition int64) iter.Seq2[eventsource.Envelope, error] {
	return func(yield func(eventsource.Envelope, error) bool) {
		for env, err := range m.ReadAll(ctx, fromPosition) {
			if err == nil {
				var data []byte
				if data, err = eventsource.MarshalEvent(env.Event); err == nil {
					env.Event = eventsource.RawEvent{Name: env.Type, Schema: eventsource.SchemaVersionOf(env.Event), JSON: data}
				} else {
					err = fmt.Errorf("eventstore: event at position %d: %w", env.Position, err)
				}
			}
			if !yield(env, err) || err != nil {
				return
			}
		}
	}
}

// at returns the envelope at position p, which must lie within the
// snapshot chunks was taken with.
func at(chunks [][]record, p int64) eventsource.Envelope {
	r := &chunks[(p-1)>>chunkShift][(p-1)&chunkMask]
	env := eventsource.Envelope{
		ID:            r.id,
		Type:          r.event.EventType(),
		AggregateType: r.aggregateType,
		AggregateID:   r.aggregateID,
		Version:       r.version,
		Position:      p,
		OccurredAt:    r.occurredAt,
		Event:         r.event,
	}
	if r.metadata != nil {
		env.Metadata = *r.metadata
		prep.CloneExtra(&env.Metadata)
	}
	return env
}

// MemoryCheckpoints is an in-memory CheckpointStore, safe for concurrent use.
type MemoryCheckpoints struct {
	mu        sync.Mutex
	positions map[string]int64
}

var (
	_ CheckpointStore   = (*MemoryCheckpoints)(nil)
	_ CheckpointSwapper = (*MemoryCheckpoints)(nil)
)

// NewMemoryCheckpoints returns an empty checkpoint store.
func NewMemoryCheckpoints() *MemoryCheckpoints {
	return &MemoryCheckpoints{positions: make(map[string]int64)}
}

// Checkpoint implements CheckpointStore.
func (c *MemoryCheckpoints) Checkpoint(ctx context.Context, name string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.positions[name], nil
}

// SaveCheckpoint implements CheckpointStore. Positions below zero are
// rejected; saving a lower position than before is allowed (a rebuild
// starts over).
func (c *MemoryCheckpoints) SaveCheckpoint(ctx context.Context, name string, position int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if position < 0 {
		return fmt.Errorf("eventstore: invalid checkpoint position %d for %q", position, name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.positions[name] = position
	return nil
}

// SwapCheckpoint implements CheckpointSwapper.
func (c *MemoryCheckpoints) SwapCheckpoint(ctx context.Context, name string, old, position int64) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if position < 0 {
		return false, fmt.Errorf("eventstore: invalid checkpoint position %d for %q", position, name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.positions[name] != old {
		return false, nil
	}
	c.positions[name] = position
	return true, nil
}
