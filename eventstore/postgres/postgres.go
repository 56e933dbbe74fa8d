// Package postgres is the production event store, on PostgreSQL through
// pgx (github.com/jackc/pgx/v5/pgxpool).
//
//	if err := postgres.Migrate(ctx, pool); err != nil { ... }
//	store := postgres.New(pool, registry)
//
// Migrate creates the tables if they are missing; it is idempotent and safe
// to run from several processes at once. It runs Schema, which is:
//
//	CREATE TABLE IF NOT EXISTS events (
//		position       bigint      PRIMARY KEY CHECK (position > 0),
//		stream_id      text        NOT NULL,
//		version        bigint      NOT NULL CHECK (version > 0),
//		event_id       uuid        NOT NULL,
//		type           text        NOT NULL,
//		aggregate_type text        NOT NULL,
//		aggregate_id   text        NOT NULL,
//		occurred_at    timestamptz NOT NULL,
//		metadata       jsonb,
//		data           jsonb       NOT NULL,
//		CONSTRAINT events_stream_version UNIQUE (stream_id, version)
//	);
//	-- the payload's schema version, added to older databases (whose rows
//	-- are version 1) only if missing:
//	ALTER TABLE events ADD COLUMN schema_version integer NOT NULL DEFAULT 1;
//	CREATE TABLE IF NOT EXISTS event_counter (
//		id   boolean PRIMARY KEY DEFAULT true CHECK (id),
//		last bigint  NOT NULL
//	);
//	INSERT INTO event_counter (id, last)
//		SELECT true, COALESCE(MAX(position), 0) FROM events
//		ON CONFLICT (id) DO NOTHING;
//	CREATE TABLE IF NOT EXISTS checkpoints (
//		name       text        PRIMARY KEY,
//		position   bigint      NOT NULL CHECK (position >= 0),
//		updated_at timestamptz NOT NULL DEFAULT now()
//	);
//	CREATE TABLE IF NOT EXISTS snapshots (
//		stream_id      text        PRIMARY KEY,
//		aggregate_type text        NOT NULL,
//		aggregate_id   text        NOT NULL,
//		version        bigint      NOT NULL,
//		schema_version bigint      NOT NULL,
//		data           bytea       NOT NULL,
//		taken_at       timestamptz NOT NULL
//	);
//
// The tables are unqualified: give the pool a search_path to keep them in a
// schema of their own.
//
// # Concurrency and global order
//
// Optimistic concurrency holds across processes: an append checks the
// stream's version inside its transaction, and UNIQUE (stream_id, version)
// backs the check (a violation is reported as a ConflictError too).
//
// Global positions come from the one-row event_counter table. An append
// runs, in one READ COMMITTED transaction sent as two pipelined round trips:
//
//	BEGIN
//	UPDATE event_counter SET last = last + n RETURNING last  -- takes the row lock
//	SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1
//	-- (the expected version is checked here, in Go)
//	INSERT ... positions last-n+1 .. last
//	COMMIT                                                    -- releases the lock
//
// The row lock is held until commit, and PostgreSQL makes a transaction
// visible before it releases its locks, so positions become visible in
// position order: a reader that has seen position p will never later find
// an event below p (which a sequence or identity column does not promise,
// since transactions commit in any order). A rolled-back append rolls the
// counter back too, so positions are also gap-free. Reading the version
// after the lock is granted means it includes every earlier append.
//
// The cost is that appends are serialized across all streams: one append
// at a time holds the lock, for about one round trip plus its insert and
// commit. Batch events to go faster: the lock is paid per append, not per
// event.
//
// If the context is cancelled or the connection drops while COMMIT is in
// flight, Append returns an error although the events may be stored; a
// retry with the same exact expected version then gets a ConflictError
// rather than storing them twice (with AnyVersion it would store them
// twice).
//
// Reads fetch pages of rows (WithPageSize) and yield them after the rows
// are closed; after a full page, the next one is read on another goroutine
// while the caller decodes and handles this one. A connection is held only
// while a page is read, never waiting on the caller's loop body.
//
// # Snapshots
//
// The Store is also an eventstore.SnapshotStore, keeping the latest
// snapshot per stream in the snapshots table. A save is one statement,
// atomic across processes without the counter lock:
//
//	INSERT INTO snapshots (...) VALUES (...)
//	ON CONFLICT (stream_id) DO UPDATE SET ...
//	WHERE snapshots.version <= excluded.version
//
// so an older snapshot, from a writer that loaded the aggregate earlier,
// never replaces a newer one; it is ignored, without an error.
//
// OccurredAt and a snapshot's TakenAt are kept at microsecond precision,
// PostgreSQL's; Append truncates OccurredAt and returns what it stored.
package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/internal/pages"
	"github.com/eventsource-go/eventsource/eventstore/internal/prep"
)

// Schema is the SQL that Migrate runs (see the package documentation).
const Schema = `
CREATE TABLE IF NOT EXISTS events (
	position       bigint      PRIMARY KEY CHECK (position > 0),
	stream_id      text        NOT NULL,
	version        bigint      NOT NULL CHECK (version > 0),
	event_id       uuid        NOT NULL,
	type           text        NOT NULL,
	aggregate_type text        NOT NULL,
	aggregate_id   text        NOT NULL,
	occurred_at    timestamptz NOT NULL,
	metadata       jsonb,
	data           jsonb       NOT NULL,
	CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
DO $$ BEGIN
	-- Checked first: ALTER TABLE takes an exclusive lock even when the
	-- column exists, which would queue every start behind long readers.
	IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'events'::regclass
			AND attname = 'schema_version' AND NOT attisdropped) THEN
		ALTER TABLE events ADD COLUMN schema_version integer NOT NULL DEFAULT 1;
	END IF;
END $$;
CREATE TABLE IF NOT EXISTS event_counter (
	id   boolean PRIMARY KEY DEFAULT true CHECK (id),
	last bigint  NOT NULL
);
INSERT INTO event_counter (id, last)
	SELECT true, COALESCE(MAX(position), 0) FROM events
	ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS checkpoints (
	name       text        PRIMARY KEY,
	position   bigint      NOT NULL CHECK (position >= 0),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS snapshots (
	stream_id      text        PRIMARY KEY,
	aggregate_type text        NOT NULL,
	aggregate_id   text        NOT NULL,
	version        bigint      NOT NULL,
	schema_version bigint      NOT NULL,
	data           bytea       NOT NULL,
	taken_at       timestamptz NOT NULL
);
`

// migrateLockID is the advisory lock that serializes concurrent Migrate
// calls: CREATE TABLE IF NOT EXISTS alone races on the catalog.
const migrateLockID = 0x6576736f75726365 // "evsource"

// Migrate creates the store's tables if they are missing.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLockID)); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if _, err := tx.Exec(ctx, Schema); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

const (
	lockSQL    = `UPDATE event_counter SET last = last + $1 RETURNING last`
	versionSQL = `SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1`
	insertSQL  = `INSERT INTO events
	(position, stream_id, version, event_id, type, aggregate_type, aggregate_id, occurred_at, metadata, data, schema_version)
	SELECT $1::bigint + u.i, $2, $3::bigint + u.i, u.event_id, u.type, u.aggregate_type, u.aggregate_id, u.occurred_at, u.metadata, u.data, u.schema_version
	FROM unnest($4::uuid[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::jsonb[], $10::jsonb[], $11::integer[])
		WITH ORDINALITY AS u(event_id, type, aggregate_type, aggregate_id, occurred_at, metadata, data, schema_version, i)`
	columns  = `position, version, event_id, type, aggregate_type, aggregate_id, occurred_at, metadata, data, schema_version`
	loadSQL  = `SELECT ` + columns + ` FROM events WHERE stream_id = $1 AND version >= $2 AND position <= $3 ORDER BY version LIMIT $4`
	readSQL  = `SELECT ` + columns + ` FROM events WHERE position >= $1 AND position <= $2 ORDER BY position LIMIT $3`
	boundSQL = `SELECT last FROM event_counter`

	saveSnapshotSQL = `INSERT INTO snapshots
	(stream_id, aggregate_type, aggregate_id, version, schema_version, data, taken_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
	ON CONFLICT (stream_id) DO UPDATE SET
		aggregate_type = excluded.aggregate_type, aggregate_id = excluded.aggregate_id, version = excluded.version,
		schema_version = excluded.schema_version, data = excluded.data, taken_at = excluded.taken_at
	WHERE snapshots.version <= excluded.version`
	loadSnapshotSQL = `SELECT aggregate_type, aggregate_id, version, schema_version, data, taken_at
	FROM snapshots WHERE stream_id = $1`
)

// Option configures New.
type Option func(*Store)

// WithPageSize sets how many rows a read fetches at a time (default 1000).
// Values below 1 are ignored.
func WithPageSize(n int) Option {
	return func(s *Store) {
		if n > 0 {
			s.pageSize = n
		}
	}
}

// Store is a Store, a CheckpointStore and a SnapshotStore on a PostgreSQL
// database whose
// schema Migrate has created. It is safe for concurrent use, and any number
// of processes may share the database.
type Store struct {
	pool     *pgxpool.Pool
	registry *eventsource.Registry
	pageSize int
	noNotify bool      // WithoutNotify
	listen   listening // OnAppend's subscribers and listener (notify.go)
}

var (
	_ eventstore.Store             = (*Store)(nil)
	_ eventstore.CheckpointStore   = (*Store)(nil)
	_ eventstore.CheckpointSwapper = (*Store)(nil)
	_ eventstore.SnapshotStore     = (*Store)(nil)
	_ eventstore.RawReader         = (*Store)(nil)
	_ eventstore.HeadReader        = (*Store)(nil)
)

// New returns a store on pool that decodes payloads with registry. It does
// not touch the database; run Migrate first. A nil pool or registry panics.
func New(pool *pgxpool.Pool, registry *eventsource.Registry, opts ...Option) *Store {
	if pool == nil || registry == nil {
		panic("postgres: New needs a pool and a registry")
	}
	s := &Store{pool: pool, registry: registry, pageSize: 1000}
	for _, opt := range opts {
		opt(s)
	}
	s.listen.init(s)
	return s
}

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, streamID string, expectedVersion int64, events []eventsource.Envelope) ([]eventsource.Envelope, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := prep.ExpectedVersion(expectedVersion); err != nil {
		return nil, err
	}
	out, err := prep.Batch(events)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return out, s.checkVersion(ctx, streamID, expectedVersion)
	}

	// Encode before taking the lock, which serializes all appends.
	n := len(out)
	var (
		ids      = make([][16]byte, n)
		types    = make([]string, n)
		aggTypes = make([]string, n)
		aggIDs   = make([]string, n)
		occurred = make([]time.Time, n)
		metadata = make([][]byte, n) // nil elements are NULL
		payloads = make([][]byte, n)
		schemas  = make([]int32, n)
	)
	for i := range out {
		env := &out[i]
		// Store and return what PostgreSQL keeps.
		env.OccurredAt = env.OccurredAt.Truncate(time.Microsecond).UTC()
		ids[i], types[i], aggTypes[i], aggIDs[i], occurred[i] = env.ID, env.Type, env.AggregateType, env.AggregateID, env.OccurredAt
		if payloads[i], err = eventsource.MarshalEvent(env.Event); err != nil {
			return nil, err
		}
		schemas[i] = int32(eventsource.SchemaVersionOf(env.Event))
		if !env.Metadata.IsZero() {
			if metadata[i], err = json.Marshal(env.Metadata); err != nil {
				return nil, fmt.Errorf("%w: encode metadata: %v", eventsource.ErrInvalidEvent, err)
			}
		}
	}

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, appendError(ctx, streamID, err)
	}
	// The pool destroys a connection released inside a transaction, so an
	// error that skips the ROLLBACK below cannot leak one.
	defer conn.Release()

	// Two pipelined round trips, the first holding BEGIN, the counter lock
	// and the version read (after the lock is granted, so it includes
	// every append that committed before this one), the second the insert
	// and COMMIT. The lock is held from the first to the end of the second.
	var last, current int64
	head := &pgx.Batch{}
	head.Queue("BEGIN")
	head.Queue(lockSQL, n).QueryRow(func(row pgx.Row) error { return row.Scan(&last) })
	head.Queue(versionSQL, streamID).QueryRow(func(row pgx.Row) error { return row.Scan(&current) })
	if err := conn.SendBatch(ctx, head).Close(); err != nil {
		rollback(ctx, conn)
		return nil, appendError(ctx, streamID, err)
	}
	if expectedVersion != eventstore.AnyVersion && expectedVersion != current {
		rollback(ctx, conn)
		return nil, &eventsource.ConflictError{StreamID: streamID, Expected: expectedVersion, Actual: current}
	}
	first := last - int64(n)
	body := &pgx.Batch{}
	body.Queue(insertSQL, first, streamID, current, ids, types, aggTypes, aggIDs, occurred, metadata, payloads, schemas)
	if !s.noNotify {
		// Delivered at COMMIT, to every process listening (notify.go).
		body.Queue(notifySQL, last)
	}
	body.Queue("COMMIT")
	if err := conn.SendBatch(ctx, body).Close(); err != nil {
		// A failed INSERT leaves the transaction open (the pipeline skips
		// the COMMIT): end it.
		rollback(ctx, conn)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_stream_version" {
			// Only reachable if a writer bypassed the counter lock; it is
			// still a conflict.
			return nil, s.conflict(ctx, streamID, expectedVersion)
		}
		return nil, appendError(ctx, streamID, err)
	}
	for i := range out {
		out[i].Version = current + int64(i) + 1
		out[i].Position = first + int64(i) + 1
	}
	s.listen.announce.Announce(last)
	return out, nil
}

// rollback ends the transaction on conn, if one is open. If that fails the
// connection is closed, which ends it too.
func rollback(ctx context.Context, conn *pgxpool.Conn) {
	if conn.Conn().PgConn().TxStatus() == 'I' {
		return
	}
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		conn.Conn().Close(ctx) //nolint:errcheck // already failing
	}
}

// checkVersion is an empty append: a version check without the lock.
func (s *Store) checkVersion(ctx context.Context, streamID string, expected int64) error {
	if expected == eventstore.AnyVersion {
		return nil
	}
	var current int64
	if err := s.pool.QueryRow(ctx, versionSQL, streamID).Scan(&current); err != nil {
		return appendError(ctx, streamID, err)
	}
	if current != expected {
		return &eventsource.ConflictError{StreamID: streamID, Expected: expected, Actual: current}
	}
	return nil
}

func (s *Store) conflict(ctx context.Context, streamID string, expected int64) error {
	var current int64
	if err := s.pool.QueryRow(ctx, versionSQL, streamID).Scan(&current); err != nil {
		return fmt.Errorf("postgres: append to %q: %w (%w)", streamID, eventsource.ErrConcurrencyConflict, err)
	}
	return &eventsource.ConflictError{StreamID: streamID, Expected: expected, Actual: current}
}

// appendError prefers the context's error, which pgx may have reported as
// a closed connection or an interrupted statement.
func appendError(ctx context.Context, streamID string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		err = cerr
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && unstorable[pgErr.Code] {
		return fmt.Errorf("postgres: append to %q: %w: %w", streamID, eventsource.ErrInvalidEvent, err)
	}
	return fmt.Errorf("postgres: append to %q: %w", streamID, err)
}

// unstorable are the SQLSTATEs of values PostgreSQL cannot hold, which
// the other stores keep: a NUL character in text (22021) or as \u0000 in
// jsonb (22P05), a jsonb value over its size limit (54000). Retrying
// cannot help, so they are ErrInvalidEvent, not a database failure.
var unstorable = map[string]bool{"22021": true, "22P05": true, "54000": true}

// Load implements eventstore.Store.
func (s *Store) Load(ctx context.Context, streamID string, fromVersion int64) iter.Seq2[eventsource.Envelope, error] {
	if strings.IndexByte(streamID, 0) >= 0 {
		// PostgreSQL's text cannot hold a NUL, so no such stream exists
		// (Append refuses it); asking would fail on the parameter.
		return func(func(eventsource.Envelope, error) bool) {}
	}
	return s.reader(func(bound int64, after *stored) (string, []any) {
		from := max(fromVersion, 1)
		if after != nil {
			from = after.env.Version + 1
		}
		return loadSQL, []any{streamID, from, bound, s.pageSize}
	}).Seq(ctx)
}

// Head implements eventstore.HeadReader: the counter, which moves only
// at commit, under its lock.
func (s *Store) Head(ctx context.Context) (int64, error) {
	var head int64
	if err := s.pool.QueryRow(ctx, boundSQL).Scan(&head); err != nil {
		return 0, readError(ctx, err)
	}
	return head, nil
}

// ReadAll implements eventstore.Store.
func (s *Store) ReadAll(ctx context.Context, fromPosition int64) iter.Seq2[eventsource.Envelope, error] {
	return s.reader(s.readAllQuery(fromPosition)).Seq(ctx)
}

// ReadAllRaw implements eventstore.RawReader: ReadAll without decoding
// the payloads.
func (s *Store) ReadAllRaw(ctx context.Context, fromPosition int64) iter.Seq2[eventsource.Envelope, error] {
	r := s.reader(s.readAllQuery(fromPosition))
	r.Decode = decodeRaw
	return r.Seq(ctx)
}

func (s *Store) readAllQuery(fromPosition int64) func(bound int64, after *stored) (string, []any) {
	return func(bound int64, after *stored) (string, []any) {
		from := max(fromPosition, 1)
		if after != nil {
			from = after.env.Position + 1
		}
		return readSQL, []any{from, bound, s.pageSize}
	}
}

// stored is an event's row as read: the envelope without its Event, and
// the payload and metadata still encoded.
type stored struct {
	env            eventsource.Envelope
	metadata, data []byte
	schemaVersion  int32
}

// reader reads pages of query's rows (see pages.Reader). (Positions up to
// the counter, the bound, are all committed: the counter moves only under
// its lock, at commit.)
func (s *Store) reader(query func(bound int64, after *stored) (string, []any)) pages.Reader[stored] {
	return pages.Reader[stored]{
		Size: s.pageSize,
		Fetch: func(ctx context.Context, bound int64, after *stored) ([]stored, error) {
			sql, args := query(bound, after)
			capHint := 64
			if after != nil {
				capHint = s.pageSize
			}
			return s.page(ctx, sql, args, capHint)
		},
		Bound:  s.Head,
		Decode: s.decode,
	}
}

// page runs one query and returns its rows. On error it returns the rows
// read before it, so that the caller yields them first.
func (s *Store) page(ctx context.Context, sql string, args []any, capHint int) ([]stored, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, readError(ctx, err)
	}
	defer rows.Close()
	// A page after a full one is likely full too; a read of one stream is
	// often short.
	page := make([]stored, 0, min(s.pageSize, capHint))
	// Scan's arguments escape: scanning into one row declared outside
	// the loop, then copying it, allocates it once per page. (pgx gives
	// every JSON value a slice of its own, which the copy may keep.)
	var (
		r  stored
		id [16]byte
	)
	env := &r.env
	names := make(map[string]string)
	dest := []any{&env.Position, &env.Version, &id, &interned{&env.Type, names}, &interned{&env.AggregateType, names},
		&env.AggregateID, &env.OccurredAt, &r.metadata, &r.data, &r.schemaVersion}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return page, readError(ctx, err)
		}
		env.ID = uuid.UUID(id)
		env.OccurredAt = env.OccurredAt.UTC()
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		return page, readError(ctx, err)
	}
	return page, nil
}

// interned scans a text column into *dst, one string per distinct value
// of a page: event and aggregate type names repeat on every row.
type interned struct {
	dst  *string
	seen map[string]string
}

// maxInterned bounds the names a page keeps; past it, values are copied.
const maxInterned = 64

// ScanBytes implements pgtype.BytesScanner; src is only valid during the
// call.
func (in *interned) ScanBytes(src []byte) error {
	if v, ok := in.seen[string(src)]; ok {
		*in.dst = v
		return nil
	}
	v := string(src)
	if len(in.seen) < maxInterned {
		in.seen[v] = v
	}
	*in.dst = v
	return nil
}

func readError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return fmt.Errorf("postgres: read: %w", err)
}

func (s *Store) decode(r *stored) (eventsource.Envelope, error) {
	env, err := decodeHead(r)
	if err != nil {
		return env, err
	}
	// Upcasts an older payload, and reads a former type name as the
	// current one.
	env.Event, env.Type, err = s.registry.DecodeVersion(env.Type, int(r.schemaVersion), r.data)
	if err != nil {
		return env, fmt.Errorf("postgres: event at position %d: %w", env.Position, err)
	}
	return env, nil
}

// decodeRaw turns r into an envelope whose Event is the stored payload,
// as an eventsource.RawEvent. (pgx gave r.data a slice of its own.)
func decodeRaw(r *stored) (eventsource.Envelope, error) {
	env, err := decodeHead(r)
	if err != nil {
		return env, err
	}
	env.Event = eventsource.RawEvent{Name: env.Type, Schema: int(r.schemaVersion), JSON: r.data}
	return env, nil
}

// decodeHead returns r's envelope without its Event, with its metadata
// decoded.
func decodeHead(r *stored) (eventsource.Envelope, error) {
	env := r.env
	if len(r.metadata) > 0 {
		var md eventsource.Metadata // apart from env, which would escape with it
		// UnmarshalJSON checks the syntax itself: no json.Unmarshal pass.
		if err := md.UnmarshalJSON(r.metadata); err != nil {
			return env, fmt.Errorf("postgres: event at position %d: %w", env.Position,
				&eventsource.DecodeError{Type: env.Type, Kind: eventsource.ErrMalformed, Cause: fmt.Errorf("metadata: %w", err)})
		}
		env.Metadata = md
	}
	return env, nil
}

// Checkpoint implements eventstore.CheckpointStore.
func (s *Store) Checkpoint(ctx context.Context, name string) (int64, error) {
	var p int64
	err := s.pool.QueryRow(ctx, `SELECT position FROM checkpoints WHERE name = $1`, name).Scan(&p)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, checkpointError(ctx, name, err)
	}
	return p, nil
}

// SaveCheckpoint implements eventstore.CheckpointStore.
func (s *Store) SaveCheckpoint(ctx context.Context, name string, position int64) error {
	if position < 0 {
		return fmt.Errorf("postgres: invalid checkpoint position %d for %q", position, name)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, now())
		ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at`,
		name, position)
	if err != nil {
		return checkpointError(ctx, name, err)
	}
	return nil
}

// SwapCheckpoint implements eventstore.CheckpointSwapper.
func (s *Store) SwapCheckpoint(ctx context.Context, name string, old, position int64) (bool, error) {
	if position < 0 {
		return false, fmt.Errorf("postgres: invalid checkpoint position %d for %q", position, name)
	}
	var q string
	if old == 0 { // none stored counts as 0
		q = `INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, now())
			ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
			WHERE checkpoints.position = $3`
	} else {
		q = `UPDATE checkpoints SET position = $2, updated_at = now() WHERE name = $1 AND position = $3`
	}
	tag, err := s.pool.Exec(ctx, q, name, position, old)
	if err != nil {
		return false, checkpointError(ctx, name, err)
	}
	return tag.RowsAffected() == 1, nil
}

func checkpointError(ctx context.Context, name string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return fmt.Errorf("postgres: checkpoint %q: %w", name, err)
}

// SaveSnapshot implements eventstore.SnapshotStore: it replaces the
// stream's snapshot unless the stored one is at a later version.
func (s *Store) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	data := snap.Data
	if data == nil {
		data = []byte{} // pgx sends a nil slice as NULL
	}
	_, err := s.pool.Exec(ctx, saveSnapshotSQL, snap.StreamID, snap.AggregateType, snap.AggregateID,
		snap.Version, int64(snap.SchemaVersion), data, snap.TakenAt)
	if err != nil {
		return snapshotError(ctx, snap.StreamID, err)
	}
	return nil
}

// LoadSnapshot implements eventstore.SnapshotStore.
func (s *Store) LoadSnapshot(ctx context.Context, streamID string) (eventstore.Snapshot, error) {
	snap := eventstore.Snapshot{StreamID: streamID}
	var schema int64
	err := s.pool.QueryRow(ctx, loadSnapshotSQL, streamID).Scan(&snap.AggregateType, &snap.AggregateID,
		&snap.Version, &schema, &snap.Data, &snap.TakenAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return eventstore.Snapshot{}, fmt.Errorf("postgres: %w: no snapshot of %q", eventsource.ErrNotFound, streamID)
	case err != nil:
		return eventstore.Snapshot{}, snapshotError(ctx, streamID, err)
	}
	snap.SchemaVersion = int(schema)
	snap.TakenAt = snap.TakenAt.UTC()
	return snap, nil
}

func snapshotError(ctx context.Context, streamID string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return fmt.Errorf("postgres: snapshot of %q: %w", streamID, err)
}
