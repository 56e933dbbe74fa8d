package idempotent

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsource-go/eventsource/internal/chunks"
)

// Schema is the table both SQL stores create idempotently. Claims are
// Unix milliseconds on the handlers' clocks; once a key is done,
// claimed_until_ms is when it was done (PurgeDone reads it).
const Schema = `CREATE TABLE IF NOT EXISTS idempotency_keys (
	handler          TEXT    NOT NULL,
	event_id         TEXT    NOT NULL,
	done             INTEGER NOT NULL DEFAULT 0,
	claimed_until_ms BIGINT  NOT NULL,
	PRIMARY KEY (handler, event_id)
)`

// doneIndex serves PurgeDone, which would otherwise scan the table for
// every chunk it deletes.
const doneIndex = `CREATE INDEX IF NOT EXISTS idempotency_keys_done ON idempotency_keys (handler, claimed_until_ms) WHERE done = 1`

// purgeChunk is how many keys one PurgeDone statement deletes, so that a
// large purge does not hold one long transaction.
const purgeChunk = 1000

// The claim inserts the key, or takes over one neither done nor held;
// a row back means the caller holds it.
const (
	claimSQL = `INSERT INTO idempotency_keys (handler, event_id, done, claimed_until_ms) VALUES (?1, ?2, 0, ?3)
	ON CONFLICT (handler, event_id) DO UPDATE SET claimed_until_ms = excluded.claimed_until_ms
	WHERE idempotency_keys.done = 0 AND idempotency_keys.claimed_until_ms <= ?4
	RETURNING 1`
	doneSQL     = `SELECT done FROM idempotency_keys WHERE handler = ?1 AND event_id = ?2`
	completeSQL = `UPDATE idempotency_keys SET done = 1, claimed_until_ms = ?3 WHERE handler = ?1 AND event_id = ?2`
	releaseSQL  = `DELETE FROM idempotency_keys WHERE handler = ?1 AND event_id = ?2 AND done = 0`
	purgeSQL    = `DELETE FROM idempotency_keys WHERE handler = ?1 AND event_id IN
	(SELECT event_id FROM idempotency_keys WHERE handler = ?1 AND done = 1 AND claimed_until_ms < ?2 LIMIT ?3)`
)

// purgeInChunks runs deleteChunk in chunks of purgeChunk keys (see
// internal/chunks).
func purgeInChunks(ctx context.Context, handler string, deleteChunk func(ctx context.Context) (int64, error)) (int64, error) {
	n, err := chunks.Delete(purgeChunk, func() (int64, error) { return deleteChunk(ctx) })
	if err != nil {
		return n, fmt.Errorf("idempotent: purge %s: %w", handler, err)
	}
	return n, nil
}

// SQLite is a Store in a SQLite database (database/sql, modernc.org/sqlite).
type SQLite struct{ db *sql.DB }

// NewSQLite returns a store on db, creating its table if it is missing.
// db should have a busy timeout set.
func NewSQLite(ctx context.Context, db *sql.DB) (*SQLite, error) {
	for _, ddl := range []string{Schema, doneIndex} {
		if _, err := db.ExecContext(ctx, ddl); err != nil {
			return nil, fmt.Errorf("idempotent: create table: %w", err)
		}
	}
	return &SQLite{db: db}, nil
}

// Claim implements Store.
func (s *SQLite) Claim(ctx context.Context, handler, eventID string, hold time.Duration) (Outcome, error) {
	now := time.Now()
	var one int
	err := s.db.QueryRowContext(ctx, claimSQL, handler, eventID, now.Add(hold).UnixMilli(), now.UnixMilli()).Scan(&one)
	if err == nil {
		return Claimed, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("idempotent: claim %s %s: %w", handler, eventID, err)
	}
	var done int
	if err := s.db.QueryRowContext(ctx, doneSQL, handler, eventID).Scan(&done); errors.Is(err, sql.ErrNoRows) {
		return Busy, nil // released meanwhile: a retry claims it
	} else if err != nil {
		return 0, fmt.Errorf("idempotent: claim %s %s: %w", handler, eventID, err)
	}
	return outcome(done), nil
}

// Complete implements Store.
func (s *SQLite) Complete(ctx context.Context, handler, eventID string) error {
	_, err := s.db.ExecContext(ctx, completeSQL, handler, eventID, time.Now().UnixMilli())
	return wrap("complete", handler, eventID, err)
}

// PurgeDone implements Purger.
func (s *SQLite) PurgeDone(ctx context.Context, handler string, doneBefore time.Time) (int64, error) {
	return purgeInChunks(ctx, handler, func(ctx context.Context) (int64, error) {
		res, err := s.db.ExecContext(ctx, purgeSQL, handler, doneBefore.UnixMilli(), purgeChunk)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	})
}

// Release implements Store.
func (s *SQLite) Release(ctx context.Context, handler, eventID string) error {
	_, err := s.db.ExecContext(ctx, releaseSQL, handler, eventID)
	return wrap("release", handler, eventID, err)
}

// Postgres is a Store in PostgreSQL (pgx).
type Postgres struct{ pool *pgxpool.Pool }

// NewPostgres returns a store on pool, creating its table if it is missing.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool) (*Postgres, error) {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// Concurrent CREATE TABLE IF NOT EXISTS can race on the catalog.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(7652)"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, Schema); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, doneIndex)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("idempotent: create table: %w", err)
	}
	return &Postgres{pool: pool}, nil
}

func pg(q string) string { return strings.ReplaceAll(q, "?", "$") }

// Claim implements Store.
func (s *Postgres) Claim(ctx context.Context, handler, eventID string, hold time.Duration) (Outcome, error) {
	now := time.Now()
	var one int
	err := s.pool.QueryRow(ctx, pg(claimSQL), handler, eventID, now.Add(hold).UnixMilli(), now.UnixMilli()).Scan(&one)
	if err == nil {
		return Claimed, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("idempotent: claim %s %s: %w", handler, eventID, err)
	}
	var done int
	if err := s.pool.QueryRow(ctx, pg(doneSQL), handler, eventID).Scan(&done); errors.Is(err, pgx.ErrNoRows) {
		return Busy, nil // released meanwhile: a retry claims it
	} else if err != nil {
		return 0, fmt.Errorf("idempotent: claim %s %s: %w", handler, eventID, err)
	}
	return outcome(done), nil
}

// Complete implements Store.
func (s *Postgres) Complete(ctx context.Context, handler, eventID string) error {
	_, err := s.pool.Exec(ctx, pg(completeSQL), handler, eventID, time.Now().UnixMilli())
	return wrap("complete", handler, eventID, err)
}

// PurgeDone implements Purger.
func (s *Postgres) PurgeDone(ctx context.Context, handler string, doneBefore time.Time) (int64, error) {
	return purgeInChunks(ctx, handler, func(ctx context.Context) (int64, error) {
		tag, err := s.pool.Exec(ctx, pg(purgeSQL), handler, doneBefore.UnixMilli(), purgeChunk)
		return tag.RowsAffected(), err
	})
}

// Release implements Store.
func (s *Postgres) Release(ctx context.Context, handler, eventID string) error {
	_, err := s.pool.Exec(ctx, pg(releaseSQL), handler, eventID)
	return wrap("release", handler, eventID, err)
}

func outcome(done int) Outcome {
	if done != 0 {
		return Done
	}
	return Busy
}

func wrap(what, handler, eventID string, err error) error {
	if err != nil {
		return fmt.Errorf("idempotent: %s %s %s: %w", what, handler, eventID, err)
	}
	return nil
}
