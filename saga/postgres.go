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
// Unix milliseconds on the runners' clock, except ended_at: a timestamptz
// to the millisecond, NULL while the instance runs.
//
// The DO block adds ended_at to tables created before it. Instances that
// ended before get the migration's time: their real end is unknown but
// earlier, so a purge counts their retention from an upper bound and
// never deletes one sooner than the retention promises, and nobody has to
// remember to purge them by hand. The document is parsed for its
// top-level "ended" only when the column is added, not at every start:
// instances that an older release ends after the upgrade keep NULL, and
// PurgeEnded never deletes them.
const PostgresSchema = `
CREATE TABLE IF NOT EXISTS saga_instances (
	saga     TEXT   NOT NULL,
	id       TEXT   NOT NULL,
	version  BIGINT NOT NULL,
	doc      BYTEA  NOT NULL,
	ended_at TIMESTAMPTZ,
	PRIMARY KEY (saga, id)
);
DO $$ BEGIN
	-- Checked first: ALTER TABLE takes an exclusive lock even when the
	-- column exists, which would queue every start behind long readers.
	IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'saga_instances'::regclass
			AND attname = 'ended_at' AND NOT attisdropped) THEN
		ALTER TABLE saga_instances ADD COLUMN IF NOT EXISTS ended_at TIMESTAMPTZ;
		-- json, not jsonb, which refuses the escaped NULs a state may hold.
		UPDATE saga_instances SET ended_at = date_trunc('milliseconds', now())
			WHERE convert_from(doc, 'UTF8')::json ->> 'ended' = 'true';
	END IF;
END $$;
CREATE INDEX IF NOT EXISTS saga_instances_ended ON saga_instances (saga, ended_at) WHERE ended_at IS NOT NULL;
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
	pool  *pgxpool.Pool
	chunk int // instances per PurgeEnded statement
}

var (
	_ Store  = (*PostgresStore)(nil)
	_ Purger = (*PostgresStore)(nil)
)

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
	return &PostgresStore{pool: pool, chunk: DefaultPurgeChunk}, nil
}

// Load implements Store.
func (s *PostgresStore) Load(ctx context.Context, saga, id string) (Instance, error) {
	var version int64
	var doc []byte
	var ended *time.Time
	err := s.pool.QueryRow(ctx, `SELECT version, doc, ended_at FROM saga_instances WHERE saga = $1 AND id = $2`,
		saga, id).Scan(&version, &doc, &ended)
	if errors.Is(err, pgx.ErrNoRows) {
		return Instance{Saga: saga, ID: id}, nil
	}
	if err != nil {
		return Instance{}, fmt.Errorf("saga: load %s %s: %w", saga, id, err)
	}
	inst, err := decodeInstance(saga, id, version, doc)
	inst.EndedAt = postgresTime(ended)
	return inst, err
}

func postgresTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// Save implements Store.
func (s *PostgresStore) Save(ctx context.Context, inst *Instance) error {
	doc, err := encodeInstance(inst)
	if err != nil {
		return err
	}
	var ended *time.Time
	if t := endTime(inst); !t.IsZero() {
		ended = &t
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var row pgx.Row
		if inst.Version == 0 {
			row = tx.QueryRow(ctx, `INSERT INTO saga_instances (saga, id, version, doc, ended_at) VALUES ($1, $2, 1, $3, $4)
				ON CONFLICT (saga, id) DO NOTHING RETURNING ended_at`, inst.Saga, inst.ID, doc, ended)
		} else {
			// The first end time stays: a re-save (an outbox update) must
			// not push the instance's purge back.
			row = tx.QueryRow(ctx, `UPDATE saga_instances SET version = version + 1, doc = $4,
					ended_at = CASE WHEN $5::timestamptz IS NULL THEN NULL ELSE COALESCE(ended_at, $5) END
				WHERE saga = $1 AND id = $2 AND version = $3 RETURNING ended_at`, inst.Saga, inst.ID, inst.Version, doc, ended)
		}
		err := row.Scan(&ended)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s %s at version %d", ErrConflict, inst.Saga, inst.ID, inst.Version)
		}
		if err != nil {
			return fmt.Errorf("saga: save %s %s: %w", inst.Saga, inst.ID, err)
		}
		return syncDeadlinesSQL(ctx, pgTx{tx}, inst, "$")
	})
	if err != nil {
		return err
	}
	inst.Version++
	inst.EndedAt = postgresTime(ended)
	return nil
}

// PurgeEnded implements Purger.
func (s *PostgresStore) PurgeEnded(ctx context.Context, saga string, endedBefore time.Time) (int64, error) {
	before := ceilMilli(endedBefore)
	return purgeInChunks(saga, s.chunk, func() (int64, error) { return s.purgeChunk(ctx, saga, before) })
}

// purgeChunk deletes up to s.chunk ended instances and their deadlines in
// one statement, so one transaction. SKIP LOCKED: an instance being saved
// now is left to the next purge rather than waited for. MATERIALIZED: as
// an IN subquery, the planner may rescan the chunk per row, and each
// rescan skips the rows just deleted and locks the next ones, unbounding
// the chunk.
func (s *PostgresStore) purgeChunk(ctx context.Context, saga string, before time.Time) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `WITH chunk AS MATERIALIZED (
			SELECT id FROM saga_instances WHERE saga = $1 AND ended_at < $2
			ORDER BY ended_at LIMIT $3 FOR UPDATE SKIP LOCKED
		), purged AS (
			DELETE FROM saga_instances i USING chunk WHERE i.saga = $1 AND i.id = chunk.id
			RETURNING i.id
		), deadlines AS (
			DELETE FROM saga_deadlines WHERE saga = $1 AND instance_id IN (SELECT id FROM purged)
		)
		SELECT count(*) FROM purged`, saga, before, s.chunk).Scan(&n)
	return n, err
}

// ClaimDue implements Store.
func (s *PostgresStore) ClaimDue(ctx context.Context, saga string, now time.Time, hold time.Duration, limit int) ([]Deadline, error) {
	// MATERIALIZED, as in purgeChunk: the chunk is chosen once, whatever
	// plan the UPDATE gets, so at most limit deadlines are claimed.
	rows, err := s.pool.Query(ctx, `WITH chunk AS MATERIALIZED (
			SELECT id FROM saga_deadlines WHERE saga = $1 AND due_ms <= $2 AND claimed_until_ms <= $2
			ORDER BY due_ms LIMIT $4 FOR UPDATE SKIP LOCKED
		)
		UPDATE saga_deadlines d SET claimed_until_ms = $3 FROM chunk WHERE d.id = chunk.id
		RETURNING d.id, d.instance_id, d.name, d.due_ms`, saga, now.UnixMilli(), now.Add(hold).UnixMilli(), limit)
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
