package saga

import (
	"context"
	"time"
)

// SetPurgeChunk sets how many instances a SQL store deletes per
// transaction, so that a test covers several chunks with a few instances.
func SetPurgeChunk(s Store, n int) {
	switch s := s.(type) {
	case *SQLiteStore:
		s.chunk = n
	case *PostgresStore:
		s.chunk = n
	}
}

// PurgeOneChunk runs one transaction of a SQL store's PurgeEnded, so that
// a test sees that it stops at the chunk size; ok is false for other
// stores.
func PurgeOneChunk(ctx context.Context, s Store, saga string, endedBefore time.Time) (n int64, ok bool, err error) {
	switch s := s.(type) {
	case *SQLiteStore:
		n, err = s.purgeChunk(ctx, saga, ceilMilli(endedBefore).UnixMilli())
		return n, true, err
	case *PostgresStore:
		n, err = s.purgeChunk(ctx, saga, ceilMilli(endedBefore))
		return n, true, err
	}
	return 0, false, nil
}

// MemoryClaims returns how many deadline claims m keeps.
func MemoryClaims(m *MemoryStore) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.claims)
}

// Timing returns the poll interval and claim hold r runs with.
func Timing[S any](r *Runner[S]) (poll, hold time.Duration) { return r.cfg.poll, r.cfg.hold }
