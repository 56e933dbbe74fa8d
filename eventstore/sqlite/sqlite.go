// Package sqlite is the embedded, durable event store: one SQLite file,
// pure Go (modernc.org/sqlite, no cgo). It is the default for examples and
// single-node services.
//
//	reg := eventsource.NewRegistry()
//	eventsource.MustRegister[OrderPlaced](reg)
//	store, err := sqlite.Open(ctx, "orders.db", sqlite.WithRegistry(reg))
//
// The file is in WAL mode, so reads never wait for writes. All writes go
// through one connection that starts its transactions with BEGIN
// IMMEDIATE: appends queue for it instead of failing with "database is
// locked", and another process that opens the same file waits on the file
// lock (up to the busy timeout). Inside that transaction the stream's version
// and the next global position are read, so versions and positions are
// gap-free and positions follow commit order.
//
// Schema (created by Open if missing):
//
//	CREATE TABLE events (
//		position       INTEGER PRIMARY KEY, -- global, 1-based, gap-free
//		stream_id      TEXT    NOT NULL,
//		version        INTEGER NOT NULL,    -- 1-based per stream
//		event_id       TEXT    NOT NULL,    -- UUID
//		type           TEXT    NOT NULL,
//		aggregate_type TEXT    NOT NULL,
//		aggregate_id   TEXT    NOT NULL,
//		occurred_at    TEXT    NOT NULL,    -- RFC 3339, UTC, nanoseconds
//		metadata       TEXT,                -- JSON, NULL when empty
//		data           TEXT    NOT NULL,    -- JSON payload
//		UNIQUE (stream_id, version)
//	) STRICT;
//	-- added by Open to files created before it, whose rows are version 1:
//	ALTER TABLE events ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1;
//	CREATE TABLE checkpoints (
//		name       TEXT    PRIMARY KEY,
//		position   INTEGER NOT NULL,
//		updated_at TEXT    NOT NULL
//	) STRICT;
//	CREATE TABLE snapshots (
//		stream_id      TEXT    PRIMARY KEY,
//		aggregate_type TEXT    NOT NULL,
//		aggregate_id   TEXT    NOT NULL,
//		version        INTEGER NOT NULL,
//		schema_version INTEGER NOT NULL,
//		data           BLOB    NOT NULL,
//		taken_at       TEXT    NOT NULL     -- RFC 3339, UTC, nanoseconds
//	) STRICT;
//
// The Store is also an eventstore.SnapshotStore on the same file, keeping
// the latest snapshot per stream: a save is one UPSERT whose WHERE clause
// keeps the stored row when its version is at least as new, so a slow
// writer never replaces a newer snapshot with an older one.
//
// Reads fetch pages of rows (WithPageSize) and yield them after the rows are
// closed; after a full page, the next one is read on another goroutine
// while the caller handles this one. A connection or read transaction is
// held only while a page is read, never waiting on the caller's loop body:
// a handler may append, or start another read, from inside a Load or
// ReadAll loop.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"strings"
	"time"

	"github.com/google/uuid"
	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/internal/pages"
	"github.com/eventsource-go/eventsource/eventstore/internal/prep"
	"github.com/eventsource-go/eventsource/internal/sleep"
)

// schemaVersion is stored in PRAGMA user_version; a file from a newer
// release is refused rather than misread. Adding a table (snapshots) does
// not change it: the statements create what is missing, and a release
// without snapshots ignores the table.
const schemaVersion = 1

const schema = `
CREATE TABLE IF NOT EXISTS events (
	position       INTEGER PRIMARY KEY,
	stream_id      TEXT    NOT NULL,
	version        INTEGER NOT NULL,
	event_id       TEXT    NOT NULL,
	type           TEXT    NOT NULL,
	aggregate_type TEXT    NOT NULL,
	aggregate_id   TEXT    NOT NULL,
	occurred_at    TEXT    NOT NULL,
	metadata       TEXT,
	data           TEXT    NOT NULL,
	UNIQUE (stream_id, version)
) STRICT;
CREATE TABLE IF NOT EXISTS checkpoints (
	name       TEXT    PRIMARY KEY,
	position   INTEGER NOT NULL,
	updated_at TEXT    NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS snapshots (
	stream_id      TEXT    PRIMARY KEY,
	aggregate_type TEXT    NOT NULL,
	aggregate_id   TEXT    NOT NULL,
	version        INTEGER NOT NULL,
	schema_version INTEGER NOT NULL,
	data           BLOB    NOT NULL,
	taken_at       TEXT    NOT NULL
) STRICT;
PRAGMA user_version = 1;
`

const (
	headSQL = `SELECT
	(SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?),
	(SELECT COALESCE(MAX(position), 0) FROM events)`
	columns  = `position, version, event_id, type, aggregate_type, aggregate_id, occurred_at, metadata, data, schema_version`
	loadSQL  = `SELECT ` + columns + ` FROM events WHERE stream_id = ? AND version >= ? AND position <= ? ORDER BY version LIMIT ?`
	readSQL  = `SELECT ` + columns + ` FROM events WHERE position >= ? AND position <= ? ORDER BY position LIMIT ?`
	boundSQL = `SELECT COALESCE(MAX(position), 0) FROM events`

	saveSnapshotSQL = `INSERT INTO snapshots
	(stream_id, aggregate_type, aggregate_id, version, schema_version, data, taken_at) VALUES (?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (stream_id) DO UPDATE SET
		aggregate_type = excluded.aggregate_type, aggregate_id = excluded.aggregate_id, version = excluded.version,
		schema_version = excluded.schema_version, data = excluded.data, taken_at = excluded.taken_at
	WHERE snapshots.version <= excluded.version`
	loadSnapshotSQL = `SELECT aggregate_type, aggregate_id, version, schema_version, data, taken_at
	FROM snapshots WHERE stream_id = ?`
)

const (
	insertColumns = 11
	insertChunk   = 25
)

func insertSQL(rows int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO events
	(position, stream_id, version, event_id, type, aggregate_type, aggregate_id, occurred_at, metadata, data, schema_version) VALUES `)
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
	}
	return b.String()
}

// timeFormat keeps full precision and sorts as text.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// Option configures Open.
type Option func(*config)

type config struct {
	registry    *eventsource.Registry
	pageSize    int
	busyTimeout time.Duration
	synchronous string
}

// WithRegistry sets the registry that decodes stored payloads. Required.
func WithRegistry(r *eventsource.Registry) Option {
	return func(c *config) { c.registry = r }
}

// WithPageSize sets how many rows a read fetches at a time (default 1000).
func WithPageSize(n int) Option {
	return func(c *config) { c.pageSize = n }
}

// WithBusyTimeout sets how long a statement waits for a lock held by
// another process before failing (default 10s).
func WithBusyTimeout(d time.Duration) Option {
	return func(c *config) { c.busyTimeout = d }
}

// WithSynchronousNormal trades durability for speed: with it, commits do
// not wait for the disk, and a power loss (not a crash of the process) may
// lose the last transactions. The default, FULL, syncs every commit.
func WithSynchronousNormal() Option {
	return func(c *config) { c.synchronous = "NORMAL" }
}

// Store is a Store, a CheckpointStore and a SnapshotStore on one SQLite
// file. It is safe for concurrent use; Close it when done.
type Store struct {
	write    *sql.DB // one connection: the only writer
	read     *sql.DB
	registry *eventsource.Registry
	pageSize int
	notify   eventstore.Announcer // subscribers to appends (OnAppend)

	// Statements are parsed once per connection, not once per call.
	head, insertOne, insertFull, saveSnapshot *sql.Stmt // on write
	load, readAll, bound, loadSnapshot        *sql.Stmt // on read
}

var (
	_ eventstore.Store             = (*Store)(nil)
	_ eventstore.CheckpointStore   = (*Store)(nil)
	_ eventstore.CheckpointSwapper = (*Store)(nil)
	_ eventstore.SnapshotStore     = (*Store)(nil)
	_ eventstore.RawReader         = (*Store)(nil)
	_ eventstore.HeadReader        = (*Store)(nil)
)

// Open opens or creates the store in the file at path, creating the schema
// if it is missing. WithRegistry is required.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	cfg := config{pageSize: 1000, busyTimeout: 10 * time.Second, synchronous: "FULL"}
	for _, opt := range opts {
		opt(&cfg)
	}
	switch {
	case cfg.registry == nil:
		return nil, errors.New("sqlite: Open needs WithRegistry")
	case cfg.pageSize < 1:
		return nil, fmt.Errorf("sqlite: page size %d, want at least 1", cfg.pageSize)
	case path == "" || strings.HasPrefix(path, ":memory:") || strings.Contains(path, "mode=memory"):
		// Every connection would get a database of its own.
		return nil, fmt.Errorf("sqlite: %q is not a file; use eventstore.NewMemory for an in-memory store", path)
	case strings.ContainsRune(path, '?'):
		return nil, fmt.Errorf("sqlite: path %q contains '?', which the driver reads as the start of options", path)
	}

	pragmas := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=synchronous(%s)",
		cfg.busyTimeout.Milliseconds(), cfg.synchronous)
	// WAL mode is set by migrate, not in the DSN: see enableWAL.
	write, err := sql.Open("sqlite", path+"?"+pragmas+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)
	s := &Store{write: write, registry: cfg.registry, pageSize: cfg.pageSize}
	if err := s.enableWAL(ctx, cfg.busyTimeout); err != nil {
		write.Close()
		return nil, fmt.Errorf("sqlite: %s: %w", path, err)
	}
	if err := s.migrate(ctx); err != nil {
		write.Close()
		return nil, fmt.Errorf("sqlite: %s: %w", path, err)
	}

	// Readers run in parallel under WAL. They hold a connection only while
	// they fetch a page, so a small pool suffices.
	s.read, err = sql.Open("sqlite", path+"?"+pragmas+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s.read.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	s.read.SetMaxIdleConns(max(4, runtime.GOMAXPROCS(0)))

	for _, p := range []struct {
		db   *sql.DB
		stmt **sql.Stmt
		sql  string
	}{
		{write, &s.head, headSQL},
		{write, &s.insertOne, insertSQL(1)},
		{write, &s.insertFull, insertSQL(insertChunk)},
		{s.read, &s.load, loadSQL},
		{s.read, &s.readAll, readSQL},
		{s.read, &s.bound, boundSQL},
		{write, &s.saveSnapshot, saveSnapshotSQL},
		{s.read, &s.loadSnapshot, loadSnapshotSQL},
	} {
		if *p.stmt, err = p.db.PrepareContext(ctx, p.sql); err != nil {
			s.Close()
			return nil, fmt.Errorf("sqlite: %s: %w", path, err)
		}
	}
	return s, nil
}

// enableWAL puts the file in WAL mode, which is stored in the file. SQLite
// does not call the busy handler for the switch: a process that opens a
// new file while another does gets SQLITE_BUSY at once, so the switch is
// retried here for up to the busy timeout.
func (s *Store) enableWAL(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		var mode string
		err := s.write.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode)
		if err == nil {
			return nil
		}
		if !isBusy(err) || time.Now().After(deadline) {
			return fmt.Errorf("set WAL mode: %w", err)
		}
		if !sleep.For(ctx, wait) {
			return ctx.Err()
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

func isBusy(err error) bool {
	var se *msqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

func (s *Store) migrate(ctx context.Context) error {
	var version int
	if err := s.write.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	if version > schemaVersion {
		return fmt.Errorf("schema version %d is newer than this release knows (%d)", version, schemaVersion)
	}
	if _, err := s.write.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	return s.addSchemaVersion(ctx)
}

// addSchemaVersion adds the payloads' schema version column to a file
// that lacks it. SQLite has no ADD COLUMN IF NOT EXISTS: the check and the
// ALTER share one write transaction, so two processes opening the same
// file cannot both add it. The default keeps older releases writing to
// the file working, and makes existing rows version 1, which they are.
func (s *Store) addSchemaVersion(ctx context.Context) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("add schema_version: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var n int
	err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info('events') WHERE name = 'schema_version'`).Scan(&n)
	if err == nil && n == 0 {
		_, err = tx.ExecContext(ctx, `ALTER TABLE events ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1`)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return fmt.Errorf("add schema_version: %w", err)
	}
	return nil
}

// Close closes the store's connections.
func (s *Store) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.head, s.insertOne, s.insertFull, s.load, s.readAll, s.bound, s.saveSnapshot, s.loadSnapshot} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if s.read != nil {
		errs = append(errs, s.read.Close())
	}
	errs = append(errs, s.write.Close())
	return errors.Join(errs...)
}

// row holds the encoded columns of one event.
type row struct {
	id, occurredAt string
	metadata       any // nil or string
	data           string
	schemaVersion  int
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
	// Encode before taking the writer, which is the bottleneck.
	rows := make([]row, len(out))
	for i := range out {
		data, err := eventsource.MarshalEvent(out[i].Event)
		if err != nil {
			return nil, err
		}
		rows[i].data = string(data)
		rows[i].schemaVersion = eventsource.SchemaVersionOf(out[i].Event)
		rows[i].id = out[i].ID.String()
		rows[i].occurredAt = out[i].OccurredAt.UTC().Format(timeFormat)
		if !out[i].Metadata.IsZero() {
			md, err := json.Marshal(out[i].Metadata)
			if err != nil {
				return nil, fmt.Errorf("%w: encode metadata: %v", eventsource.ErrInvalidEvent, err)
			}
			rows[i].metadata = string(md)
		}
	}

	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, appendError(ctx, streamID, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit

	var current, last int64
	if err := tx.StmtContext(ctx, s.head).QueryRowContext(ctx, streamID).Scan(&current, &last); err != nil {
		return nil, appendError(ctx, streamID, err)
	}
	if expectedVersion != eventstore.AnyVersion && expectedVersion != current {
		return nil, &eventsource.ConflictError{StreamID: streamID, Expected: expectedVersion, Actual: current}
	}
	if len(out) == 0 {
		return out, nil
	}
	// Full chunks go through a prepared multi-row INSERT, the rest row by
	// row through a prepared single-row one: both are parsed once per Store.
	full := tx.StmtContext(ctx, s.insertFull)
	one := tx.StmtContext(ctx, s.insertOne)
	args := make([]any, 0, min(len(out), insertChunk)*insertColumns)
	for start := 0; start < len(out); {
		n := insertChunk
		stmt := full
		if len(out)-start < insertChunk {
			n, stmt = 1, one
		}
		args = args[:0]
		for i := start; i < start+n; i++ {
			env := &out[i]
			env.Version = current + int64(i) + 1
			env.Position = last + int64(i) + 1
			args = append(args, env.Position, streamID, env.Version, rows[i].id, env.Type,
				env.AggregateType, env.AggregateID, rows[i].occurredAt, rows[i].metadata, rows[i].data, rows[i].schemaVersion)
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			if isUniqueViolation(err) {
				// Only possible if something bypassed the write lock; report
				// it as what it is, a conflict.
				tx.Rollback() //nolint:errcheck
				return nil, s.conflict(ctx, streamID, expectedVersion)
			}
			return nil, appendError(ctx, streamID, err)
		}
		start += n
	}
	if err := tx.Commit(); err != nil {
		return nil, appendError(ctx, streamID, err)
	}
	s.notify.Announce(out[len(out)-1].Position)
	return out, nil
}

// appendError prefers the context's error, which the driver may have
// reported as an interrupted statement or a rolled-back transaction.
func appendError(ctx context.Context, streamID string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		err = cerr
	}
	return fmt.Errorf("sqlite: append to %q: %w", streamID, err)
}

func isUniqueViolation(err error) bool {
	var se *msqlite.Error
	return errors.As(err, &se) &&
		(se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

func (s *Store) conflict(ctx context.Context, streamID string, expected int64) error {
	var current int64
	err := s.read.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?`, streamID).Scan(&current)
	if err != nil {
		return fmt.Errorf("sqlite: append to %q: %w (%w)", streamID, eventsource.ErrConcurrencyConflict, err)
	}
	return &eventsource.ConflictError{StreamID: streamID, Expected: expected, Actual: current}
}

// Load implements eventstore.Store.
func (s *Store) Load(ctx context.Context, streamID string, fromVersion int64) iter.Seq2[eventsource.Envelope, error] {
	return s.reader(func(ctx context.Context, bound int64, after *stored) (*sql.Rows, error) {
		from := max(fromVersion, 1)
		if after != nil {
			from = after.version + 1
		}
		return s.load.QueryContext(ctx, streamID, from, bound, s.pageSize)
	}).Seq(ctx)
}

// Head implements eventstore.HeadReader.
func (s *Store) Head(ctx context.Context) (int64, error) {
	var head int64
	if err := s.bound.QueryRowContext(ctx).Scan(&head); err != nil {
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
	var buf []byte
	r.Decode = func(r *stored) (eventsource.Envelope, error) {
		env, err := decodeRaw(r, &buf)
		if err != nil {
			return env, fmt.Errorf("sqlite: event at position %d: %w", r.position, err)
		}
		return env, nil
	}
	return r.Seq(ctx)
}

func (s *Store) readAllQuery(fromPosition int64) func(ctx context.Context, bound int64, after *stored) (*sql.Rows, error) {
	return func(ctx context.Context, bound int64, after *stored) (*sql.Rows, error) {
		from := max(fromPosition, 1)
		if after != nil {
			from = after.position + 1
		}
		return s.readAll.QueryContext(ctx, from, bound, s.pageSize)
	}
}

// stored is an event's row as read, before its payload is decoded. The
// driver hands TEXT columns over as strings, which are kept as they are.
type stored struct {
	position, version int64
	schemaVersion     int
	id, typ           string
	aggType, aggID    string
	occurred          string
	metadata          sql.NullString
	data              string
}

// reader reads pages of query's rows (see pages.Reader). Each read has a
// buffer of its own for the payload being decoded.
func (s *Store) reader(query func(ctx context.Context, bound int64, after *stored) (*sql.Rows, error)) pages.Reader[stored] {
	var buf []byte
	return pages.Reader[stored]{
		Size: s.pageSize,
		Fetch: func(ctx context.Context, bound int64, after *stored) ([]stored, error) {
			return s.page(ctx, query, bound, after)
		},
		Bound: s.Head,
		Decode: func(r *stored) (eventsource.Envelope, error) {
			env, err := s.decode(r, &buf)
			if err != nil {
				return env, fmt.Errorf("sqlite: event at position %d: %w", r.position, err)
			}
			return env, nil
		},
	}
}

// page runs one query and returns its rows. On error it returns the rows
// read before it, so that the caller yields them first.
func (s *Store) page(ctx context.Context, query func(context.Context, int64, *stored) (*sql.Rows, error), bound int64, after *stored) ([]stored, error) {
	rows, err := query(ctx, bound, after)
	if err != nil {
		return nil, readError(ctx, err)
	}
	defer rows.Close()
	page := make([]stored, 0, pageCap(s.pageSize, after))
	// Scan's arguments escape: scanning into one row declared outside
	// the loop, then copying it, allocates it once per page.
	var r stored
	dest := []any{&r.position, &r.version, &r.id, &r.typ, &r.aggType, &r.aggID,
		&r.occurred, &r.metadata, &r.data, &r.schemaVersion}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return page, readError(ctx, err)
		}
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		return page, readError(ctx, err)
	}
	return page, nil
}

// readError prefers the context's error, which the driver may have
// reported as an interrupted statement.
func readError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return fmt.Errorf("sqlite: read: %w", err)
}

// decode turns r into an envelope, decoding its payload from a copy in
// *buf (decoders do not keep the bytes they are given).
func (s *Store) decode(r *stored, buf *[]byte) (eventsource.Envelope, error) {
	env, err := decodeHead(r, buf)
	if err != nil {
		return env, err
	}
	// Upcasts an older payload, and reads a former type name as the
	// current one.
	*buf = append((*buf)[:0], r.data...)
	env.Event, env.Type, err = s.registry.DecodeVersion(env.Type, r.schemaVersion, *buf)
	return env, err
}

// decodeRaw turns r into an envelope whose Event is the stored payload,
// as an eventsource.RawEvent.
func decodeRaw(r *stored, buf *[]byte) (eventsource.Envelope, error) {
	env, err := decodeHead(r, buf)
	if err != nil {
		return env, err
	}
	env.Event = eventsource.RawEvent{Name: r.typ, Schema: r.schemaVersion, JSON: []byte(r.data)}
	return env, nil
}

// decodeHead turns r into an envelope without its Event, decoding its
// metadata from a copy in *buf.
func decodeHead(r *stored, buf *[]byte) (eventsource.Envelope, error) {
	env := eventsource.Envelope{Position: r.position, Version: r.version, Type: r.typ,
		AggregateType: r.aggType, AggregateID: r.aggID}
	var err error
	if env.ID, err = uuid.Parse(r.id); err != nil {
		return env, malformed(env.Type, "event_id", err)
	}
	if env.OccurredAt, err = time.Parse(time.RFC3339Nano, r.occurred); err != nil {
		return env, malformed(env.Type, "occurred_at", err)
	}
	if r.metadata.String != "" {
		var md eventsource.Metadata // apart from env, which would escape with it
		*buf = append((*buf)[:0], r.metadata.String...)
		// UnmarshalJSON checks the syntax itself: no json.Unmarshal pass.
		if err := md.UnmarshalJSON(*buf); err != nil {
			return env, malformed(env.Type, "metadata", err)
		}
		env.Metadata = md
	}
	return env, nil
}

func malformed(typ, field string, err error) error {
	return &eventsource.DecodeError{Type: typ, Kind: eventsource.ErrMalformed, Cause: fmt.Errorf("%s: %w", field, err)}
}

// pageCap is the capacity a page starts with: a read of one stream is
// often short, but a page after a full one is likely full too.
func pageCap(size int, after *stored) int {
	if after != nil {
		return size
	}
	return min(size, 64)
}

// Checkpoint implements eventstore.CheckpointStore.
func (s *Store) Checkpoint(ctx context.Context, name string) (int64, error) {
	var p int64
	err := s.read.QueryRowContext(ctx, `SELECT position FROM checkpoints WHERE name = ?`, name).Scan(&p)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, checkpointError(ctx, name, err)
	}
	return p, nil
}

// SaveCheckpoint implements eventstore.CheckpointStore.
func (s *Store) SaveCheckpoint(ctx context.Context, name string, position int64) error {
	if position < 0 {
		return fmt.Errorf("sqlite: invalid checkpoint position %d for %q", position, name)
	}
	_, err := s.write.ExecContext(ctx, `INSERT INTO checkpoints (name, position, updated_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at`,
		name, position, time.Now().UTC().Format(timeFormat))
	if err != nil {
		return checkpointError(ctx, name, err)
	}
	return nil
}

// SwapCheckpoint implements eventstore.CheckpointSwapper.
func (s *Store) SwapCheckpoint(ctx context.Context, name string, old, position int64) (bool, error) {
	if position < 0 {
		return false, fmt.Errorf("sqlite: invalid checkpoint position %d for %q", position, name)
	}
	now := time.Now().UTC().Format(timeFormat)
	var res sql.Result
	var err error
	if old == 0 { // none stored counts as 0
		res, err = s.write.ExecContext(ctx, `INSERT INTO checkpoints (name, position, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
			WHERE checkpoints.position = 0`, name, position, now)
	} else {
		res, err = s.write.ExecContext(ctx, `UPDATE checkpoints SET position = ?, updated_at = ? WHERE name = ? AND position = ?`,
			position, now, name, old)
	}
	if err != nil {
		return false, checkpointError(ctx, name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, checkpointError(ctx, name, err)
	}
	return n == 1, nil
}

func checkpointError(ctx context.Context, name string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return fmt.Errorf("sqlite: checkpoint %q: %w", name, err)
}

// SaveSnapshot implements eventstore.SnapshotStore: it replaces the
// stream's snapshot unless the stored one is at a later version.
func (s *Store) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	data := snap.Data
	if data == nil {
		data = []byte{} // the driver binds a nil slice as NULL
	}
	_, err := s.saveSnapshot.ExecContext(ctx, snap.StreamID, snap.AggregateType, snap.AggregateID,
		snap.Version, snap.SchemaVersion, data, snap.TakenAt.UTC().Format(timeFormat))
	if err != nil {
		return snapshotError(ctx, snap.StreamID, err)
	}
	return nil
}

// LoadSnapshot implements eventstore.SnapshotStore.
func (s *Store) LoadSnapshot(ctx context.Context, streamID string) (eventstore.Snapshot, error) {
	snap := eventstore.Snapshot{StreamID: streamID}
	var takenAt string
	err := s.loadSnapshot.QueryRowContext(ctx, streamID).Scan(&snap.AggregateType, &snap.AggregateID,
		&snap.Version, &snap.SchemaVersion, &snap.Data, &takenAt)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return eventstore.Snapshot{}, fmt.Errorf("sqlite: %w: no snapshot of %q", eventsource.ErrNotFound, streamID)
	case err != nil:
		return eventstore.Snapshot{}, snapshotError(ctx, streamID, err)
	}
	if snap.TakenAt, err = time.Parse(time.RFC3339Nano, takenAt); err != nil {
		return eventstore.Snapshot{}, fmt.Errorf("sqlite: snapshot of %q: taken_at: %w", streamID, err)
	}
	return snap, nil
}

// snapshotError prefers the context's error, which the driver may have
// reported as an interrupted statement.
func snapshotError(ctx context.Context, streamID string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return fmt.Errorf("sqlite: snapshot of %q: %w", streamID, err)
}
