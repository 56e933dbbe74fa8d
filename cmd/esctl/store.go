package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/internal/redact"
)

// storeDB reads a store's tables directly: the operator's tool has none of
// the application's Go event types, and Store.ReadAll decodes every
// payload through a Registry, so it would refuse every event. Checkpoints
// are read and written through the store's CheckpointStore.
type storeDB struct {
	kind  string // sqlite or postgres
	where string // for output, no secret
	db    *sql.DB
	cp    eventstore.CheckpointStore
	close func()
}

// ph returns the n-th (1-based) placeholder of the store's SQL dialect.
func (s *storeDB) ph(n int) string {
	if s.kind == "postgres" {
		return fmt.Sprintf("$%d", n)
	}
	return "?"
}

func openStore(ctx context.Context, e *env) (*storeDB, error) {
	switch {
	case e.sqlitePath != "":
		if _, err := os.Stat(e.sqlitePath); err != nil {
			return nil, fmt.Errorf("sqlite store: %w", err) // Open would create an empty one
		}
		st, err := sqlite.Open(ctx, e.sqlitePath, sqlite.WithRegistry(emptyRegistry()))
		if err != nil {
			return nil, err
		}
		db, err := sql.Open("sqlite", "file:"+e.sqlitePath+"?mode=ro&_pragma=busy_timeout(5000)")
		if err != nil {
			_ = st.Close()
			return nil, err
		}
		return &storeDB{kind: "sqlite", where: "sqlite " + e.sqlitePath, db: db, cp: st,
			close: func() { _ = db.Close(); _ = st.Close() }}, nil
	case e.postgresURL != "":
		pool, err := pgxpool.New(ctx, e.postgresURL)
		if err != nil {
			return nil, fmt.Errorf("postgres %s: %w", redact.URL(e.postgresURL), err)
		}
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres %s: %w", redact.URL(e.postgresURL), err)
		}
		db := stdlib.OpenDBFromPool(pool)
		return &storeDB{kind: "postgres", where: "postgres " + redact.URL(e.postgresURL), db: db,
			cp: postgres.New(pool, emptyRegistry()), close: func() { _ = db.Close(); pool.Close() }}, nil
	}
	return nil, usagef("no store configured: set -sqlite-path or -postgres-url (or EVENTSOURCE_SQLITE_PATH, EVENTSOURCE_POSTGRES_URL)")
}

func withStore(ctx context.Context, e *env, fn func(ctx context.Context, s *storeDB) error) error {
	s, err := openStore(ctx, e)
	if err != nil {
		return err
	}
	defer s.close()
	return fn(ctx, s)
}

// columns selects the wire fields; uuid and jsonb are read as text.
func (s *storeDB) columns() string {
	if s.kind == "postgres" {
		return `position, version, event_id::text, type, aggregate_type, aggregate_id, occurred_at, metadata::text, data::text, schema_version`
	}
	return `position, version, event_id, type, aggregate_type, aggregate_id, occurred_at, metadata, data, schema_version`
}

func (s *storeDB) events(ctx context.Context, query string, args ...any) ([]rawEvent, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.kind, err)
	}
	defer rows.Close()
	var out []rawEvent
	for rows.Next() {
		var (
			ev       rawEvent
			occurred any
			metadata sql.NullString
			data     string
		)
		if err := rows.Scan(&ev.Position, &ev.Version, &ev.ID, &ev.Type, &ev.AggregateType, &ev.AggregateID,
			&occurred, &metadata, &data, &ev.SchemaVersion); err != nil {
			return nil, fmt.Errorf("%s: %w", s.kind, err)
		}
		switch t := occurred.(type) {
		case time.Time:
			ev.OccurredAt = t
		case string:
			ev.OccurredAt, _ = time.Parse(time.RFC3339Nano, t)
		}
		if metadata.Valid && metadata.String != "" && metadata.String != "null" {
			ev.Metadata = json.RawMessage(metadata.String)
		}
		ev.Data = json.RawMessage(data)
		if ev.SchemaVersion <= 1 {
			ev.SchemaVersion = 0
		}
		out = append(out, ev)
	}
	return out, rows.Err()
}

func (s *storeDB) head(ctx context.Context) (int64, error) {
	var h int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) FROM events`).Scan(&h); err != nil {
		return 0, fmt.Errorf("%s: head: %w", s.kind, err)
	}
	return h, nil
}

func cmdStoreRead(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("[-from POSITION] [-limit N] [-type T,...] [-aggregate ID]")
	from := fs.Int64("from", 1, "first global position (inclusive)")
	limit := fs.Int("limit", 100, "at most this many events")
	types := fs.String("type", "", "only these event types, comma-separated")
	aggregate := fs.String("aggregate", "", "only this aggregate: an ID, or Type-ID")
	if pos, err := e.parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	f := tailFilter{types: splitList(*types), aggregate: *aggregate}
	return withStore(ctx, e, func(ctx context.Context, s *storeDB) error {
		var out []rawEvent
		next := *from
		// Pages in global order, filtered here, until limit matched.
		for len(out) < *limit {
			page, err := s.events(ctx, `SELECT `+s.columns()+` FROM events WHERE position >= `+s.ph(1)+` ORDER BY position LIMIT 500`, next)
			if err != nil {
				return err
			}
			for _, ev := range page {
				if f.match(ev) && len(out) < *limit {
					out = append(out, ev)
				}
			}
			if len(page) < 500 {
				break
			}
			next = page[len(page)-1].Position + 1
		}
		return printEvents(e, out)
	})
}

func cmdStoreLoad(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("STREAM-ID [-from VERSION]   (a stream ID is Type-ID, as eventsource.StreamID builds it)")
	from := fs.Int64("from", 1, "first version (inclusive)")
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("one stream ID is required, e.g. Order-42")
	}
	return withStore(ctx, e, func(ctx context.Context, s *storeDB) error {
		out, err := s.events(ctx, `SELECT `+s.columns()+` FROM events WHERE stream_id = `+s.ph(1)+` AND version >= `+s.ph(2)+` ORDER BY version`, pos[0], *from)
		if err != nil {
			return err
		}
		if len(out) == 0 && e.output != "json" {
			fmt.Fprintf(e.stderr, "stream %s: no events\n", pos[0])
		}
		return printEvents(e, out)
	})
}

func printEvents(e *env, evs []rawEvent) error {
	if e.output == "json" {
		if evs == nil {
			evs = []rawEvent{}
		}
		return writeJSON(e.stdout, evs)
	}
	t := newTable(e.stdout, "POSITION", "TIME", "TYPE", "STREAM", "VERSION", "DATA")
	for _, ev := range evs {
		t.row(ev.Position, ev.OccurredAt.UTC().Format(time.DateTime), ev.Type, ev.AggregateType+"-"+ev.AggregateID, ev.Version, string(ev.Data))
	}
	return t.flush()
}

type storeCounts struct {
	Store   string           `json:"store"`
	Events  int64            `json:"events"`
	Streams int64            `json:"streams"`
	Head    int64            `json:"head"`
	ByType  map[string]int64 `json:"by_type"`
}

func (s *storeDB) counts(ctx context.Context) (storeCounts, error) {
	c := storeCounts{Store: s.where, ByType: map[string]int64{}}
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(DISTINCT stream_id), COALESCE(MAX(position), 0) FROM events`).
		Scan(&c.Events, &c.Streams, &c.Head); err != nil {
		return c, fmt.Errorf("%s: count: %w", s.kind, err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT type, COUNT(*) FROM events GROUP BY type ORDER BY type`)
	if err != nil {
		return c, fmt.Errorf("%s: count: %w", s.kind, err)
	}
	defer rows.Close()
	for rows.Next() {
		var t string
		var n int64
		if err := rows.Scan(&t, &n); err != nil {
			return c, err
		}
		c.ByType[t] = n
	}
	return c, rows.Err()
}

func cmdStoreCount(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("")
	if pos, err := e.parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return withStore(ctx, e, func(ctx context.Context, s *storeDB) error {
		c, err := s.counts(ctx)
		if err != nil {
			return err
		}
		if e.output == "json" {
			return writeJSON(e.stdout, c)
		}
		fmt.Fprintf(e.stdout, "%s: %d events in %d streams, head position %d\n", s.where, c.Events, c.Streams, c.Head)
		t := newTable(e.stdout, "TYPE", "EVENTS")
		for _, typ := range sortedKeys(c.ByType) {
			t.row(typ, c.ByType[typ])
		}
		return t.flush()
	})
}

// followerRow is one checkpoint: a projection or a relay, as the store
// sees it from another process.
type followerRow struct {
	Name      string    `json:"name"`
	Position  int64     `json:"position"`
	Head      int64     `json:"head"`
	Lag       int64     `json:"lag"`
	State     string    `json:"state"`
	Owner     string    `json:"owner,omitempty"` // the lease holder, for followers with a lease
	UpdatedAt time.Time `json:"updated_at"`
	LastError string    `json:"last_error,omitempty"`
}

// followers reads every checkpoint. State is what the store tells: a
// held lease is "running", an expired one "stopped"; without a lease,
// "caught_up" or "behind". A process's own Status (retrying, last error)
// is not in the store.
func (s *storeDB) followers(ctx context.Context) ([]followerRow, error) {
	head, err := s.head(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT name, position, updated_at FROM checkpoints ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("%s: checkpoints: %w", s.kind, err)
	}
	var out []followerRow
	for rows.Next() {
		var r followerRow
		var updated any
		if err := rows.Scan(&r.Name, &r.Position, &updated); err != nil {
			rows.Close()
			return nil, err
		}
		switch t := updated.(type) {
		case time.Time:
			r.UpdatedAt = t
		case string:
			r.UpdatedAt, _ = time.Parse(time.RFC3339Nano, t)
		}
		r.Head, r.Lag = head, max(head-r.Position, 0)
		r.State = "caught_up"
		if r.Lag > 0 {
			r.State = "behind"
		}
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		s.lease(ctx, &out[i])
	}
	return out, nil
}

// lease fills the state from the leases table, when the follower has one.
func (s *storeDB) lease(ctx context.Context, r *followerRow) {
	var owner string
	var held bool
	var err error
	if s.kind == "postgres" {
		err = s.db.QueryRowContext(ctx, `SELECT owner, expires_at > now() FROM leases WHERE name = $1`, r.Name).Scan(&owner, &held)
	} else {
		var expires int64
		err = s.db.QueryRowContext(ctx, `SELECT owner, expires_ms FROM leases WHERE name = ?`, r.Name).Scan(&owner, &expires)
		held = expires > time.Now().UnixMilli()
	}
	if err != nil { // no lease table, or no lease for this name
		return
	}
	r.Owner = owner
	if held {
		r.State = "running"
	} else {
		r.State = "stopped"
	}
}

func cmdStatus(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("[NAME...]")
	names, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	return withStore(ctx, e, func(ctx context.Context, s *storeDB) error {
		rows, err := s.followers(ctx)
		if err != nil {
			return err
		}
		if len(names) > 0 {
			var sel []followerRow
			for _, n := range names {
				found := false
				for _, r := range rows {
					if r.Name == n {
						sel, found = append(sel, r), true
					}
				}
				if !found {
					return fmt.Errorf("no checkpoint named %q in %s", n, s.where)
				}
			}
			rows = sel
		}
		if e.output == "json" {
			if rows == nil {
				rows = []followerRow{}
			}
			return writeJSON(e.stdout, rows)
		}
		t := newTable(e.stdout, "NAME", "POSITION", "HEAD", "LAG", "STATE", "OWNER", "UPDATED", "LAST ERROR")
		for _, r := range rows {
			t.row(r.Name, r.Position, r.Head, r.Lag, r.State, orDash(r.Owner), r.UpdatedAt.UTC().Format(time.DateTime), orDash(r.LastError))
		}
		return t.flush()
	})
}

func cmdProjectionReset(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("NAME [-to POSITION]")
	to := fs.Int64("to", 0, "the position to set (0: the start, so everything is applied again)")
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("one projection (checkpoint) name is required")
	}
	return withStore(ctx, e, func(ctx context.Context, s *storeDB) error {
		before, err := resetCheckpoint(ctx, s, pos[0], *to)
		if err != nil {
			return err
		}
		if e.output == "json" {
			return writeJSON(e.stdout, map[string]any{"name": pos[0], "from": before, "to": *to})
		}
		fmt.Fprintf(e.stdout, "%s: checkpoint %d -> %d\n", pos[0], before, *to)
		return nil
	})
}

// resetCheckpoint moves an existing checkpoint. A running follower does
// not save over it (eventstore.CheckpointSwapper): it reads it again and
// starts over from there.
func resetCheckpoint(ctx context.Context, s *storeDB, name string, to int64) (int64, error) {
	rows, err := s.followers(ctx)
	if err != nil {
		return 0, err
	}
	for _, r := range rows {
		if r.Name == name {
			if err := s.cp.SaveCheckpoint(ctx, name, to); err != nil {
				return 0, err
			}
			return r.Position, nil
		}
	}
	return 0, fmt.Errorf("no checkpoint named %q in %s (a typo would start a new one)", name, s.where)
}

func cmdProjectionRebuild(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("NAME [-wait=false]")
	wait := fs.Bool("wait", true, "follow the running projection until it is back at the head")
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("one projection (checkpoint) name is required")
	}
	name := pos[0]
	return withStore(ctx, e, func(ctx context.Context, s *storeDB) error {
		before, err := resetCheckpoint(ctx, s, name, 0)
		if err != nil {
			return err
		}
		head, err := s.head(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "%s: checkpoint %d -> 0; the running projection applies the %d events again (its read model is not cleared: a projection that must start empty implements projection.Resetter and is rebuilt with Runner.Rebuild)\n", name, before, head)
		if !*wait {
			return nil
		}
		bar := newProgress(e, "rebuilding "+name, head)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		last, lastMove := int64(0), time.Now()
		for {
			p, err := s.cp.Checkpoint(ctx, name)
			if err != nil {
				return err
			}
			bar.set(p)
			if p >= head {
				bar.finish()
				if e.output == "json" {
					return writeJSON(e.stdout, map[string]any{"name": name, "position": p, "head": head})
				}
				fmt.Fprintf(e.stdout, "%s: rebuilt to position %d\n", name, p)
				return nil
			}
			if p != last {
				last, lastMove = p, time.Now()
			} else if time.Since(lastMove) > e.timeout {
				bar.finish()
				return fmt.Errorf("%s: no progress for %v at position %d of %d: is the projection running?", name, e.timeout, p, head)
			}
			select {
			case <-ctx.Done():
				bar.finish()
				return ctx.Err()
			case <-t.C:
			}
		}
	})
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
