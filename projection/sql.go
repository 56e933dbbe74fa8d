package projection

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
)

// SQL is a projection whose read model lives in a SQL database (SQLite,
// or PostgreSQL through database/sql: github.com/jackc/pgx/v5/stdlib's
// OpenDBFromPool). A runner made by NewSQLRunner applies a batch of events
// and saves its checkpoint in one transaction, so the read model and the
// checkpoint never disagree: even a crash (kill -9) never applies an event
// twice to the read model, nor loses one.
type SQL interface {
	// EventTypes lists the types Apply receives.
	EventTypes() []string
	// Apply changes the read model for env inside tx. It must not commit
	// or roll back tx. An error rolls the batch back; the events before
	// env are then committed again without it, and env is retried.
	Apply(ctx context.Context, tx *sql.Tx, env eventsource.Envelope) error
}

// SQLResetter is implemented by SQL projections that can drop their read
// model (in tx, with the checkpoint's reset), which Rebuild needs.
type SQLResetter interface {
	Reset(ctx context.Context, tx *sql.Tx) error
}

// The tables a SQL runner keeps in the read model's database, created by
// NewSQLRunner if missing. Placeholders are $1-style, which both SQLite and
// PostgreSQL read.
const (
	sqlSchemaCheckpoints = `CREATE TABLE IF NOT EXISTS projection_checkpoints (
	name     TEXT   PRIMARY KEY,
	position BIGINT NOT NULL
)`
	sqlSchemaParked = `CREATE TABLE IF NOT EXISTS projection_parked (
	projection     TEXT    NOT NULL,
	position       BIGINT  NOT NULL,
	event_id       TEXT    NOT NULL,
	type           TEXT    NOT NULL,
	aggregate_type TEXT    NOT NULL,
	aggregate_id   TEXT    NOT NULL,
	attempts       INTEGER NOT NULL,
	error          TEXT    NOT NULL,
	parked_at      TEXT    NOT NULL,
	PRIMARY KEY (projection, position)
)`
	// The update moves the checkpoint only from where this batch started:
	// if another runner moved it (a deposed lease holder, or a second
	// runner without a lease), the batch is rolled back instead of applied
	// twice.
	sqlAdvance = `UPDATE projection_checkpoints SET position = $1 WHERE name = $2 AND position = $3`
	sqlInsert  = `INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`
	sqlRead    = `SELECT position FROM projection_checkpoints WHERE name = $1`
	sqlSet     = `INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2)
	ON CONFLICT (name) DO UPDATE SET position = excluded.position`
	sqlPark = `INSERT INTO projection_parked
	(projection, position, event_id, type, aggregate_type, aggregate_id, attempts, error, parked_at)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (projection, position) DO NOTHING`
	sqlParked = `SELECT position, event_id, type, aggregate_type, aggregate_id, attempts, error, parked_at
	FROM projection_parked WHERE projection = $1 ORDER BY position`
)

// ErrCheckpointMoved matches a SQL runner's batch that was rolled back
// because another runner of the same name moved the checkpoint meanwhile.
// The runner reads the checkpoint again and goes on from there.
var ErrCheckpointMoved = errors.New("projection: checkpoint moved by another runner")

// NewSQLRunner returns a runner that applies p's events in transactions on
// db, each of up to the checkpoint batch (WithCheckpoint) and saving the
// checkpoint, named name, in the table projection_checkpoints of db; parked
// events go to projection_parked. It creates both tables if missing.
//
// On SQLite, open db with _txlock=immediate and a busy timeout, as every
// transaction writes.
func NewSQLRunner(ctx context.Context, name string, p SQL, store eventstore.Store, db *sql.DB, opts ...Option) (*Runner, error) {
	for _, ddl := range []string{sqlSchemaCheckpoints, sqlSchemaParked} {
		if err := createTable(ctx, db, ddl); err != nil {
			return nil, fmt.Errorf("projection: %s: create tables: %w", name, err)
		}
	}
	cp := &sqlCheckpoints{db: db}
	r := newRunner(name, p.EventTypes(), store, cp, opts)
	r.sql = &sqlRunner{r: r, p: p, db: db, cp: cp}
	return r, nil
}

// createTable retries a CREATE TABLE IF NOT EXISTS that raced with another
// process's (PostgreSQL reports the loser a unique violation on its catalog).
func createTable(ctx context.Context, db *sql.DB, ddl string) error {
	var err error
	for range 3 {
		if _, err = db.ExecContext(ctx, ddl); err == nil {
			return nil
		}
	}
	return err
}

// sqlCheckpoints is the Follower's view of projection_checkpoints. The
// runner's transactions save the checkpoint themselves: the Follower's
// save of the same position afterwards is skipped.
type sqlCheckpoints struct {
	db        *sql.DB
	mu        sync.Mutex
	committed map[string]int64
}

func (c *sqlCheckpoints) Checkpoint(ctx context.Context, name string) (int64, error) {
	var p int64
	err := c.db.QueryRowContext(ctx, sqlRead, name).Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return p, err
}

func (c *sqlCheckpoints) SaveCheckpoint(ctx context.Context, name string, position int64) error {
	c.mu.Lock()
	done := c.committed[name] == position && position != 0
	c.mu.Unlock()
	if done {
		return nil
	}
	_, err := c.db.ExecContext(ctx, sqlSet, name, position)
	return err
}

func (c *sqlCheckpoints) committedAt(name string, p int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.committed == nil {
		c.committed = make(map[string]int64)
	}
	c.committed[name] = p
}

// sqlRunner is the transactional half of a Runner.
type sqlRunner struct {
	r  *Runner
	p  SQL
	db *sql.DB
	cp *sqlCheckpoints

	// The Follower learns of a batch only once it is all committed; a
	// slow batch commits every checkpoint interval before that. from is
	// where the current batch started and at what it committed so far,
	// which Status reports meanwhile.
	mu       sync.Mutex
	from, at int64
}

// committed records that the current batch committed up to p.
func (s *sqlRunner) committed(p int64) {
	s.cp.committedAt(s.r.follower.Name, p)
	s.mu.Lock()
	s.at = max(s.at, p)
	s.mu.Unlock()
}

// progress returns where the current batch started and how far it
// committed.
func (s *sqlRunner) progress() (from, at int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.from, s.at
}

// applyBatch commits batch (contiguous positions after the checkpoint) in
// one or more transactions. A projection error rolls back; what came
// before the failing event is committed again without it. With policy
// (Run), the event is then retried up to MaxAttempts times, then halts or
// is parked; without (CatchUp), the error is returned at once.
func (s *sqlRunner) applyBatch(ctx context.Context, batch []eventsource.Envelope, policy bool) error {
	s.mu.Lock()
	s.from, s.at = batch[0].Position-1, batch[0].Position-1
	s.mu.Unlock()
	rest := batch
	for len(rest) > 0 {
		n, applyErr, err := s.commit(ctx, rest, true)
		if err != nil {
			return err
		}
		rest = rest[n:]
		if applyErr == nil {
			s.r.succeeded()
			continue
		}
		env := rest[0]
		if !policy {
			return fmt.Errorf("event at position %d: %w", env.Position, applyErr)
		}
		retry, stop := s.r.failed(ctx, env, applyErr)
		switch {
		case stop != nil:
			return stop
		case !retry: // parked, with the checkpoint past it
			rest = rest[1:]
		}
	}
	return nil
}

// commit applies envs in one transaction, cut (when cut is set) once the
// checkpoint interval passes, and returns how many it committed. If the
// projection fails on an event, the transaction is rolled back, the events
// before it are committed again in a new one, and applyErr is the failure
// of envs[n].
func (s *sqlRunner) commit(ctx context.Context, envs []eventsource.Envelope, cut bool) (n int, applyErr, err error) {
	start := time.Now()
	every := s.r.follower.SaveInterval
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, nil, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	for i, env := range envs {
		if s.r.wants(env.Type) {
			if aerr := s.applyOne(ctx, tx, env); aerr != nil {
				if rerr := tx.Rollback(); rerr != nil {
					return 0, nil, rerr
				}
				if i == 0 {
					return 0, aerr, nil
				}
				// Not cut: the events after a cut would be left out, and
				// the failure blamed on the first of them. They fitted in
				// the interval a moment ago.
				k, again, err := s.commit(ctx, envs[:i], false)
				if err != nil || again != nil {
					return k, again, err
				}
				return k, aerr, nil
			}
		}
		n = i + 1
		if cut && every > 0 && n < len(envs) && time.Since(start) >= every {
			break
		}
	}
	if err := s.advance(ctx, tx, envs[0].Position-1, envs[n-1].Position); err != nil {
		return 0, nil, err
	}
	if err := tx.Commit(); err != nil {
		return 0, nil, err
	}
	s.committed(envs[n-1].Position)
	return n, nil, nil
}

func (s *sqlRunner) applyOne(ctx context.Context, tx *sql.Tx, env eventsource.Envelope) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("projection panicked: %v", p)
		}
	}()
	return s.p.Apply(ctx, tx, env)
}

// advance moves the checkpoint from 'from' to 'to' in tx, or fails with
// ErrCheckpointMoved if it is not at 'from'.
func (s *sqlRunner) advance(ctx context.Context, tx *sql.Tx, from, to int64) error {
	name := s.r.follower.Name
	res, err := tx.ExecContext(ctx, sqlAdvance, to, name, from)
	if err != nil {
		return err
	}
	if k, err := res.RowsAffected(); err != nil || k == 1 {
		return err
	}
	if from == 0 {
		res, err = tx.ExecContext(ctx, sqlInsert, name, to)
		if err != nil {
			return err
		}
		if k, err := res.RowsAffected(); err != nil || k == 1 {
			return err
		}
	}
	return fmt.Errorf("%w: expected %d", ErrCheckpointMoved, from)
}

// parkTx records a parked event and moves the checkpoint past it.
func (s *sqlRunner) parkTx(ctx context.Context, env eventsource.Envelope, pe ParkedEvent) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, sqlPark, pe.Projection, pe.Position, pe.EventID.String(), pe.Type,
		pe.AggregateType, pe.AggregateID, pe.Attempts, pe.Error, pe.ParkedAt.Format(time.RFC3339Nano)); err != nil {
		return err
	}
	if err := s.advance(ctx, tx, env.Position-1, env.Position); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.committed(env.Position)
	return nil
}

func (s *sqlRunner) parkedEvents(ctx context.Context) ([]ParkedEvent, error) {
	rows, err := s.db.QueryContext(ctx, sqlParked, s.r.follower.Name)
	if err != nil {
		return nil, fmt.Errorf("projection: parked events: %w", err)
	}
	defer rows.Close()
	var out []ParkedEvent
	for rows.Next() {
		pe := ParkedEvent{Projection: s.r.follower.Name}
		var id, at string
		if err := rows.Scan(&pe.Position, &id, &pe.Type, &pe.AggregateType, &pe.AggregateID, &pe.Attempts, &pe.Error, &at); err != nil {
			return nil, fmt.Errorf("projection: parked events: %w", err)
		}
		pe.EventID, _ = uuid.Parse(id)
		pe.ParkedAt, _ = time.Parse(time.RFC3339Nano, at)
		out = append(out, pe)
	}
	return out, rows.Err()
}

// reset drops the read model and sets the checkpoint to 0 in one
// transaction.
func (s *sqlRunner) reset(ctx context.Context) error {
	reset, ok := s.p.(SQLResetter)
	if !ok {
		return fmt.Errorf("projection: %T cannot be rebuilt: it does not implement SQLResetter", s.p)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("projection: reset: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if err := reset.Reset(ctx, tx); err != nil {
		return fmt.Errorf("projection: reset: %w", err)
	}
	if _, err := tx.ExecContext(ctx, sqlSet, s.r.follower.Name, 0); err != nil {
		return fmt.Errorf("projection: reset checkpoint: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("projection: reset: %w", err)
	}
	s.cp.committedAt(s.r.follower.Name, 0)
	s.mu.Lock()
	s.from, s.at = 0, 0
	s.mu.Unlock()
	return nil
}
