package sqlite

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/eventsource-go/eventsource/eventstore"
)

// leaseSchema is created on a lease's first use. Expiries are Unix
// milliseconds: every process sharing a SQLite file runs on its host, so
// they share a clock.
const leaseSchema = `CREATE TABLE IF NOT EXISTS leases (
	name       TEXT    PRIMARY KEY,
	owner      TEXT    NOT NULL,
	expires_ms INTEGER NOT NULL
) STRICT`

const (
	// The upsert takes a free or expired name, or renews owner's own hold;
	// SQLite reports no change when the WHERE refuses it.
	acquireLeaseSQL = `INSERT INTO leases (name, owner, expires_ms) VALUES (?1, ?2, ?3)
	ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
	WHERE leases.owner = excluded.owner OR leases.expires_ms <= ?4`
	renewLeaseSQL   = `UPDATE leases SET expires_ms = ?3 WHERE name = ?1 AND owner = ?2`
	releaseLeaseSQL = `DELETE FROM leases WHERE name = ?1 AND owner = ?2`
)

// Lease is an eventstore.Lease kept in a row per name of the store's
// file, so relays and projection runners in every process that opens the
// file share it. It goes through the store's single writer connection: a
// hold or renewal is one small write.
type Lease struct {
	s      *Store
	mu     sync.Mutex // guards inited
	inited bool
}

var _ eventstore.Lease = (*Lease)(nil)

// Lease returns the store's lease. Its table is created on first use.
func (s *Store) Lease() *Lease { return &Lease{s: s} }

func (l *Lease) init(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inited {
		return nil
	}
	if _, err := l.s.write.ExecContext(ctx, leaseSchema); err != nil {
		return fmt.Errorf("sqlite: create leases table: %w", err)
	}
	l.inited = true
	return nil
}

func (l *Lease) exec(ctx context.Context, what, name, query string, args ...any) (bool, error) {
	if err := l.init(ctx); err != nil {
		return false, err
	}
	res, err := l.s.write.ExecContext(ctx, query, args...)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			err = cerr // the driver reports a cancellation as an interrupted statement
		}
		return false, fmt.Errorf("sqlite: %s lease %q: %w", what, name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlite: %s lease %q: %w", what, name, err)
	}
	return n == 1, nil
}

// TryAcquire implements eventstore.Lease.
func (l *Lease) TryAcquire(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	now := time.Now()
	return l.exec(ctx, "acquire", name, acquireLeaseSQL, name, owner, now.Add(ttl).UnixMilli(), now.UnixMilli())
}

// Renew implements eventstore.Lease.
func (l *Lease) Renew(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	return l.exec(ctx, "renew", name, renewLeaseSQL, name, owner, time.Now().Add(ttl).UnixMilli())
}

// Release implements eventstore.Lease.
func (l *Lease) Release(ctx context.Context, name, owner string) error {
	_, err := l.exec(ctx, "release", name, releaseLeaseSQL, name, owner)
	return err
}
