package saga

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// sqliteSchema is created idempotently by NewSQLiteStore. Times are Unix
// milliseconds on the runners' clock; ended_at is NULL while an instance
// runs (sqliteEndedAt adds it to files created before it).
const sqliteSchema = `
CREATE TABLE IF NOT EXISTS saga_instances (
	saga     TEXT    NOT NULL,
	id       TEXT    NOT NULL,
	version  INTEGER NOT NULL,
	doc      BLOB    NOT NULL,
	ended_at INTEGER,
	PRIMARY KEY (saga, id)
) STRICT;
CREATE TABLE IF NOT EXISTS saga_deadlines (
	id               TEXT    PRIMARY KEY,
	saga             TEXT    NOT NULL,
	instance_id      TEXT    NOT NULL,
	name             TEXT    NOT NULL,
	due_ms           INTEGER NOT NULL,
	claimed_until_ms INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX IF NOT EXISTS saga_deadlines_due ON saga_deadlines (saga, due_ms);
CREATE INDEX IF NOT EXISTS saga_deadlines_instance ON saga_deadlines (saga, instance_id);`

// SQLiteStore is a Store in a SQLite database (modernc.org/sqlite through
// database/sql): tables saga_instances and saga_deadlines, which may share
// the event store's file. Processes that open the same file share its
// instances and deadlines; SQLite's write lock orders their writes and the
// version column detects a lost update.
type SQLiteStore struct {
	db    *sql.DB
	owned bool
	chunk int // instances per PurgeEnded transaction
}

var (
	_ Store  = (*SQLiteStore)(nil)
	_ Purger = (*SQLiteStore)(nil)
)

// OpenSQLite opens (creating it if needed) the SQLite file at path with the
// settings the store needs: WAL, a busy timeout, and write transactions
// that take the write lock when they begin.
func OpenSQLite(ctx context.Context, path string) (*SQLiteStore, error) {
	if path == "" || strings.ContainsRune(path, '?') || strings.HasPrefix(path, ":memory:") {
		return nil, fmt.Errorf("saga: sqlite path %q is not a plain file name", path)
	}
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("saga: open %s: %w", path, err)
	}
	s, err := NewSQLiteStore(ctx, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.owned = true
	return s, nil
}

// NewSQLiteStore returns a store on db, creating its tables if they are
// missing. db should have a busy timeout and _txlock=immediate (as
// OpenSQLite sets), so that concurrent writers wait instead of failing.
func NewSQLiteStore(ctx context.Context, db *sql.DB) (*SQLiteStore, error) {
	if _, err := db.ExecContext(ctx, sqliteSchema); err != nil {
		return nil, fmt.Errorf("saga: create sqlite tables: %w", err)
	}
	if err := sqliteEndedAt(ctx, db); err != nil {
		return nil, err
	}
	return &SQLiteStore{db: db, chunk: DefaultPurgeChunk}, nil
}

// sqliteEndedAt adds the ended_at column, and the index PurgeEnded
// selects by, to a file created before them. SQLite has no ADD COLUMN IF
// NOT EXISTS: the check and the ALTER share one write transaction, so two
// processes opening the file cannot both add it.
//
// Instances that ended before get the migration's time: their real end is
// unknown but earlier, so a purge counts their retention from an upper
// bound and never deletes one sooner than the retention promises, and
// nobody has to remember to purge them by hand. The document is parsed
// for its top-level "ended" only when the column is added, not at every
// open: instances that an older release ends after the upgrade keep
// NULL, and PurgeEnded never deletes them.
func sqliteEndedAt(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("saga: add ended_at: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var n int
	err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info('saga_instances') WHERE name = 'ended_at'`).Scan(&n)
	if err == nil && n == 0 {
		_, err = tx.ExecContext(ctx, `ALTER TABLE saga_instances ADD COLUMN ended_at INTEGER`)
		if err == nil {
			// CAST: SQLite reads a BLOB given to json_extract as JSONB.
			_, err = tx.ExecContext(ctx, `UPDATE saga_instances SET ended_at = ?1
				WHERE json_extract(CAST(doc AS TEXT), '$.ended') = 1`, time.Now().UnixMilli())
		}
	}
	if err == nil {
		_, err = tx.ExecContext(ctx, `CREATE INDEX IF NOT EXISTS saga_instances_ended
			ON saga_instances (saga, ended_at) WHERE ended_at IS NOT NULL`)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return fmt.Errorf("saga: add ended_at: %w", err)
	}
	return nil
}

// DB returns the store's database.
func (s *SQLiteStore) DB() *sql.DB { return s.db }

// Close closes the database if OpenSQLite opened it.
func (s *SQLiteStore) Close() error {
	if s.owned {
		return s.db.Close()
	}
	return nil
}

// Load implements Store.
func (s *SQLiteStore) Load(ctx context.Context, saga, id string) (Instance, error) {
	var version int64
	var doc []byte
	var ended sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT version, doc, ended_at FROM saga_instances WHERE saga = ?1 AND id = ?2`,
		saga, id).Scan(&version, &doc, &ended)
	if errors.Is(err, sql.ErrNoRows) {
		return Instance{Saga: saga, ID: id}, nil
	}
	if err != nil {
		return Instance{}, fmt.Errorf("saga: load %s %s: %w", saga, id, err)
	}
	inst, err := decodeInstance(saga, id, version, doc)
	inst.EndedAt = sqliteTime(ended)
	return inst, err
}

func sqliteTime(ms sql.NullInt64) time.Time {
	if !ms.Valid {
		return time.Time{}
	}
	return time.UnixMilli(ms.Int64).UTC()
}

// Save implements Store.
func (s *SQLiteStore) Save(ctx context.Context, inst *Instance) (err error) {
	doc, err := encodeInstance(inst)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("saga: save %s %s: %w", inst.Saga, inst.ID, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	var ended sql.NullInt64
	if t := endTime(inst); !t.IsZero() {
		ended = sql.NullInt64{Int64: t.UnixMilli(), Valid: true}
	}
	var row *sql.Row
	if inst.Version == 0 {
		row = tx.QueryRowContext(ctx, `INSERT INTO saga_instances (saga, id, version, doc, ended_at) VALUES (?1, ?2, 1, ?3, ?4)
			ON CONFLICT (saga, id) DO NOTHING RETURNING ended_at`, inst.Saga, inst.ID, doc, ended)
	} else {
		// The first end time stays: a re-save (an outbox update) must not
		// push the instance's purge back.
		row = tx.QueryRowContext(ctx, `UPDATE saga_instances SET version = version + 1, doc = ?4,
				ended_at = CASE WHEN ?5 IS NULL THEN NULL ELSE COALESCE(ended_at, ?5) END
			WHERE saga = ?1 AND id = ?2 AND version = ?3 RETURNING ended_at`, inst.Saga, inst.ID, inst.Version, doc, ended)
	}
	if err = row.Scan(&ended); errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %s %s at version %d", ErrConflict, inst.Saga, inst.ID, inst.Version)
	}
	if err != nil {
		return fmt.Errorf("saga: save %s %s: %w", inst.Saga, inst.ID, err)
	}
	if err := syncDeadlinesSQL(ctx, sqlTx{tx}, inst, "?"); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("saga: save %s %s: %w", inst.Saga, inst.ID, err)
	}
	inst.Version++
	inst.EndedAt = sqliteTime(ended)
	return nil
}

// PurgeEnded implements Purger.
func (s *SQLiteStore) PurgeEnded(ctx context.Context, saga string, endedBefore time.Time) (int64, error) {
	before := ceilMilli(endedBefore).UnixMilli()
	return purgeInChunks(saga, s.chunk, func() (int64, error) { return s.purgeChunk(ctx, saga, before) })
}

// purgeChunk deletes up to s.chunk ended instances and their
// deadlines in one transaction.
func (s *SQLiteStore) purgeChunk(ctx context.Context, saga string, before int64) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	// A write first: the transaction holds the write lock from there, so
	// the deadlines deleted next are those of exactly these instances.
	ids, err := sqlTx{tx}.ids(ctx, `DELETE FROM saga_instances WHERE saga = ?1 AND id IN (
			SELECT id FROM saga_instances WHERE saga = ?1 AND ended_at < ?2 ORDER BY ended_at LIMIT ?3)
		RETURNING id`, saga, before, s.chunk)
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM saga_deadlines
		WHERE saga = ?1 AND instance_id IN (SELECT value FROM json_each(?2))`, saga, string(list)); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	return int64(len(ids)), nil
}

// ClaimDue implements Store.
func (s *SQLiteStore) ClaimDue(ctx context.Context, saga string, now time.Time, hold time.Duration, limit int) ([]Deadline, error) {
	rows, err := s.db.QueryContext(ctx, `UPDATE saga_deadlines SET claimed_until_ms = ?3
		WHERE id IN (SELECT id FROM saga_deadlines WHERE saga = ?1 AND due_ms <= ?2 AND claimed_until_ms <= ?2
			ORDER BY due_ms LIMIT ?4)
		RETURNING id, instance_id, name, due_ms`, saga, now.UnixMilli(), now.Add(hold).UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("saga: claim deadlines of %s: %w", saga, err)
	}
	defer rows.Close()
	var out []Deadline
	for rows.Next() {
		d := Deadline{Saga: saga}
		var due int64
		if err := rows.Scan(&d.ID, &d.Instance, &d.Name, &due); err != nil {
			return nil, fmt.Errorf("saga: claim deadlines of %s: %w", saga, err)
		}
		d.Due = time.UnixMilli(due).UTC()
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("saga: claim deadlines of %s: %w", saga, err)
	}
	slices.SortFunc(out, func(a, b Deadline) int { return a.Due.Compare(b.Due) })
	return out, nil
}

// execer is what syncDeadlinesSQL needs of a transaction.
type execer interface {
	exec(ctx context.Context, query string, args ...any) error
	ids(ctx context.Context, query string, args ...any) ([]string, error)
}

type sqlTx struct{ tx *sql.Tx }

func (t sqlTx) exec(ctx context.Context, q string, args ...any) error {
	_, err := t.tx.ExecContext(ctx, q, args...)
	return err
}

func (t sqlTx) ids(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := t.tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// syncDeadlinesSQL makes the deadline rows of inst those of
// inst.Deadlines, keeping the claims of the rows that stay. mark is the
// placeholder prefix: "?" (SQLite) or "$" (PostgreSQL).
func syncDeadlinesSQL(ctx context.Context, tx execer, inst *Instance, mark string) error {
	wrap := func(err error) error { return fmt.Errorf("saga: save deadlines of %s %s: %w", inst.Saga, inst.ID, err) }
	indexed := inst.indexed()
	have, err := tx.ids(ctx, "SELECT id FROM saga_deadlines WHERE saga = "+mark+"1 AND instance_id = "+mark+"2", inst.Saga, inst.ID)
	if err != nil {
		return wrap(err)
	}
	for _, id := range have {
		if !slices.ContainsFunc(indexed, func(d Deadline) bool { return d.ID == id }) {
			if err := tx.exec(ctx, "DELETE FROM saga_deadlines WHERE id = "+mark+"1", id); err != nil {
				return wrap(err)
			}
		}
	}
	for _, d := range indexed {
		if slices.Contains(have, d.ID) {
			continue
		}
		if err := tx.exec(ctx, "INSERT INTO saga_deadlines (id, saga, instance_id, name, due_ms) VALUES ("+
			mark+"1, "+mark+"2, "+mark+"3, "+mark+"4, "+mark+"5)", d.ID, inst.Saga, inst.ID, d.Name, d.Due.UnixMilli()); err != nil {
			return wrap(err)
		}
	}
	return nil
}
