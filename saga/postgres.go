package saga

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresSchema is created idempotently by NewPostgresStore. Times are
// Unix milliseconds on the runners' clock.
const PostgresSchema = `
CREATE TABLE IF NOT EXISTS saga_instances (
	saga    TEXT   NOT NULL,
	id      TEXT   NOT NULL,
	version BIGINT NOT NULL,
	doc     BYTEA  NOT NULL,
	PRIMARY KEY (saga, id)
);
CREATE TABLE IF NOT EXISTS saga_deadlines (
	id               TEXT   PRIMARY KEY,
	saga             TEXT   NOT NULL,
	instance_id      TEXT   NOT NULL,
	name             TEXT   NOT NULL,
	due_ms           BIGINT NOT NULL,
	claimed_until_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS saga_deadlines_due ON saga_deadlines (saga, due_ms);
CREATE INDEX IF NOT EXISTS saga_deadlines_instance ON saga_deadlines (saga, instance_id);`

// PostgresStore is a Store in PostgreSQL (pgx): tables saga_instances and
// saga_deadlines, which may share the event store's database. Every
// process on the database shares the instances; the version column
// detects a lost update and deadlines are claimed with SKIP LOCKED.
type PostgresStore struct {
	pool *pgxpool.Pool
}

var _ Store = (*PostgresStore)(nil)

// schemaLock serialises concurrent CREATE ... IF NOT EXISTS, which can
// race on PostgreSQL's catalog.
const schemaLock = 0x5a6761 // "Zga"

// NewPostgresStore returns a store on pool, creating its tables if they are
// missing.
func NewPostgresStore(ctx context.Context, pool *pgxpool.Pool) (*PostgresStore, error) {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLock); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, PostgresSchema)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("saga: create postgres tables: %w", err)
	}
	return &PostgresStore{pool: pool}, nil
}

// Load implements Store.
func (s *PostgresStore) Load(ctx context.Context, saga, id string) (Instance, error) {
	var version int64
	var doc []byte
	err := s.pool.QueryRow(ctx, `SELECT version, doc FROM saga_instances WHERE saga = $1 AND id = $2`, saga, id).Scan(&version, &doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return Instance{Saga: saga, ID: id}, nil
	}
	if err != nil {
		return Instance{}, fmt.Errorf("saga: load %s %s: %w", saga, id, err)
	}
	return decodeInstance(saga, id, version, doc)
}

// Save implements Store.
func (s *PostgresStore) Save(ctx context.Context, inst *Instance) error {
	doc, err := encodeInstance(inst)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var tag interface{ RowsAffected() int64 }
		var err error
		if inst.Version == 0 {
			tag, err = tx.Exec(ctx, `INSERT INTO saga_instances (saga, id, version, doc) VALUES ($1, $2, 1, $3)
				ON CONFLICT (saga, id) DO NOTHING`, inst.Saga, inst.ID, doc)
		} else {
			tag, err = tx.Exec(ctx, `UPDATE saga_instances SET version = version + 1, doc = $4
				WHERE saga = $1 AND id = $2 AND version = $3`, inst.Saga, inst.ID, inst.Version, doc)
		}
		if err != nil {
			return fmt.Errorf("saga: save %s %s: %w", inst.Saga, inst.ID, err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("%w: %s %s at version %d", ErrConflict, inst.Saga, inst.ID, inst.Version)
		}
		return syncDeadlinesSQL(ctx, pgTx{tx}, inst, "$")
	})
	if err != nil {
		return err
	}
	inst.Version++
	return nil
}

// ClaimDue implements Store.
func (s *PostgresStore) ClaimDue(ctx context.Context, saga string, now time.Time, hold time.Duration, limit int) ([]Deadline, error) {
	rows, err := s.pool.Query(ctx, `UPDATE saga_deadlines SET claimed_until_ms = $3
		WHERE id IN (SELECT id FROM saga_deadlines WHERE saga = $1 AND due_ms <= $2 AND claimed_until_ms <= $2
			ORDER BY due_ms LIMIT $4 FOR UPDATE SKIP LOCKED)
		RETURNING id, instance_id, name, due_ms`, saga, now.UnixMilli(), now.Add(hold).UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("saga: claim deadlines of %s: %w", saga, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Deadline, error) {
		d := Deadline{Saga: saga}
		var due int64
		err := row.Scan(&d.ID, &d.Instance, &d.Name, &due)
		d.Due = time.UnixMilli(due).UTC()
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("saga: claim deadlines of %s: %w", saga, err)
	}
	slices.SortFunc(out, func(a, b Deadline) int { return a.Due.Compare(b.Due) })
	return out, nil
}

type pgTx struct{ tx pgx.Tx }

func (t pgTx) exec(ctx context.Context, q string, args ...any) error {
	_, err := t.tx.Exec(ctx, q, args...)
	return err
}

func (t pgTx) ids(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := t.tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
