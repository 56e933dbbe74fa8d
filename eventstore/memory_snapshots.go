package eventstore

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/eventsource-go/eventsource"
)

// MemorySnapshots is an in-memory SnapshotStore.
type MemorySnapshots struct {
	mu    sync.RWMutex
	byKey map[string]Snapshot
}

// NewMemorySnapshots returns an empty snapshot store.
func NewMemorySnapshots() *MemorySnapshots {
	return &MemorySnapshots{byKey: make(map[string]Snapshot)}
}

// SaveSnapshot keeps s unless a snapshot at a later version is stored.
func (m *MemorySnapshots) SaveSnapshot(ctx context.Context, s Snapshot) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.Data = slices.Clone(s.Data)
	m.mu.Lock()
	defer m.mu.Unlock()
	if prev, ok := m.byKey[s.StreamID]; ok && prev.Version > s.Version {
		return nil
	}
	m.byKey[s.StreamID] = s
	return nil
}

// LoadSnapshot returns the latest snapshot of streamID.
func (m *MemorySnapshots) LoadSnapshot(ctx context.Context, streamID string) (Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return Snapshot{}, err
	}
	m.mu.RLock()
	s, ok := m.byKey[streamID]
	m.mu.RUnlock()
	if !ok {
		return Snapshot{}, fmt.Errorf("%w: no snapshot of %q", eventsource.ErrNotFound, streamID)
	}
	s.Data = slices.Clone(s.Data)
	return s, nil
}
