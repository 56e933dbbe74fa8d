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
)

// Schema is the table both SQL stores create idempotently. Claims are
// Unix milliseconds on the handlers' clocks.
const Schema = `CREATE TABLE IF NOT EXISTS idempotency_keys (
	handler          TEXT    NOT NULL,
	event_id         TEXT    NOT NULL,
	done             INTEGER NOT NULL DEFAULT 0,
	claimed_until_ms BIGINT  NOT NULL,
	PRIMARY KEY (handler, event_id)
)`

// The claim inserts the key, or takes over one neither done nor held;
// a row back means the caller holds it.
const (
	claimSQL = `INSERT INTO idempotency_keys (handler, event_id, done, claimed_until_ms) VALUES (?1, ?2, 0, ?3)
	ON CONFLICT (handler, event_id) DO UPDATE SET claimed_until_ms = excluded.claimed_until_ms
	WHERE idempotency_keys.done = 0 AND idempotency_keys.claimed_until_ms <= ?4
	RETURNING 1`
	doneSQL     = `SELECT done FROM idempotency_keys WHERE handler = ?1 AND event_id = ?2`
	completeSQL = `UPDATE idempotency_keys SET done = 1 WHERE handler = ?1 AND event_id = ?2`
	releaseSQL  = `DELETE FROM idempotency_keys WHERE handler = ?1 AND event_id = ?2 AND done = 0`
)

// SQLite is a Store in a SQLite database (database/sql, modernc.org/sqlite).
type SQLite struct{ db *sql.DB }

// NewSQLite returns a store on db, creating its table if it is missing.
// db should have a busy timeout set.
func NewSQLite(ctx context.Context, db *sql.DB) (*SQLite, error) {
	if _, err := db.ExecContext(ctx, Schema); err != nil {
		return nil, fmt.Errorf("idempotent: create table: %w", err)
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
	_, err := s.db.ExecContext(ctx, completeSQL, handler, eventID)
	return wrap("complete", handler, eventID, err)
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
		_, err := tx.Exec(ctx, Schema)
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
	_, err := s.pool.Exec(ctx, pg(completeSQL), handler, eventID)
	return wrap("complete", handler, eventID, err)
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
