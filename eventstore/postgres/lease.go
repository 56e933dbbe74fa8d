package postgres

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/eventsource-go/eventsource/eventstore"
)

// LeaseSchema is the table Lease creates on first use (Migrate does not
// need to know it).
const LeaseSchema = `CREATE TABLE IF NOT EXISTS leases (
	name       text        PRIMARY KEY,
	owner      text        NOT NULL,
	expires_at timestamptz NOT NULL
)`

const (
	// Expiries are on the database's clock, so owners on hosts whose
	// clocks disagree still agree on who holds a name.
	acquireLeaseSQL = `INSERT INTO leases (name, owner, expires_at)
	VALUES ($1, $2, clock_timestamp() + $3 * interval '1 microsecond')
	ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
	WHERE leases.owner = excluded.owner OR leases.expires_at <= clock_timestamp()`
	renewLeaseSQL = `UPDATE leases SET expires_at = clock_timestamp() + $3 * interval '1 microsecond'
	WHERE name = $1 AND owner = $2`
	releaseLeaseSQL = `DELETE FROM leases WHERE name = $1 AND owner = $2`
)

// Lease is an eventstore.Lease kept as a row per name, with its expiry on
// the database's clock, in the store's database: relays and projection
// runners in every process on the database share it.
//
// A row rather than an advisory lock: an advisory lock pins one pooled
// connection per held name for as long as it is held and does not survive
// a transaction-mode pooler (PgBouncer); and when the holder's connection
// is cut, the server frees the lock while the holder, not told, keeps
// acting. A row with an expiry gives a bounded failover (the TTL) and a
// holder that knows its own deadline and stops before it, through any
// pool, at the cost of one small UPDATE per renewal.
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
	// Under Migrate's lock: concurrent CREATE TABLE IF NOT EXISTS races
	// on the catalog.
	tx, err := l.s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: create leases table: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLockID)); err != nil {
		return fmt.Errorf("postgres: create leases table: %w", err)
	}
	if _, err := tx.Exec(ctx, LeaseSchema); err != nil {
		return fmt.Errorf("postgres: create leases table: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: create leases table: %w", err)
	}
	l.inited = true
	return nil
}

func (l *Lease) exec(ctx context.Context, what, name, query string, args ...any) (bool, error) {
	if err := l.init(ctx); err != nil {
		return false, err
	}
	tag, err := l.s.pool.Exec(ctx, query, args...)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		}
		return false, fmt.Errorf("postgres: %s lease %q: %w", what, name, err)
	}
	return tag.RowsAffected() == 1, nil
}

// TryAcquire implements eventstore.Lease.
func (l *Lease) TryAcquire(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	return l.exec(ctx, "acquire", name, acquireLeaseSQL, name, owner, ttl.Microseconds())
}

// Renew implements eventstore.Lease.
func (l *Lease) Renew(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	return l.exec(ctx, "renew", name, renewLeaseSQL, name, owner, ttl.Microseconds())
}

// Release implements eventstore.Lease.
func (l *Lease) Release(ctx context.Context, name, owner string) error {
	_, err := l.exec(ctx, "release", name, releaseLeaseSQL, name, owner)
	return err
}
