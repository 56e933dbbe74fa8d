package postgres_test

import (
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
	"github.com/eventsource-go/eventsource/eventstore/storetest"
)

// TestUpcasting runs the schema evolution suite on rows written straight
// into the table, as an older release would have.
func TestUpcasting(t *testing.T) {
	var pools sync.Map // *postgres.Store -> its pool
	pool := func(s eventstore.Store) *pgxpool.Pool {
		p, _ := pools.Load(s)
		return p.(*pgxpool.Pool)
	}
	storetest.RunUpcasting(t, storetest.UpcastOptions{
		Open: func(t *testing.T, reg *eventsource.Registry) eventstore.Store {
			_, p := newStore(t)
			s := postgres.New(p, reg)
			pools.Store(s, p)
			return s
		},
		InsertRaw: func(t *testing.T, s eventstore.Store, rows []storetest.RawEvent) {
			insertRawRows(t, pool(s), rows)
		},
		StoredSchemaVersion: func(t *testing.T, s eventstore.Store, position int64) int {
			var v int
			if err := pool(s).QueryRow(t.Context(), `SELECT schema_version FROM events WHERE position = $1`, position).Scan(&v); err != nil {
				t.Fatal(err)
			}
			return v
		},
	})
}

// insertRawRows writes rows at the next positions, moving the counter as
// Append does; a zero SchemaVersion leaves the column out, as a release
// that predates it would.
func insertRawRows(t *testing.T, pool *pgxpool.Pool, rows []storetest.RawEvent) {
	t.Helper()
	ctx := t.Context()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	for _, r := range rows {
		var pos int64
		if err := tx.QueryRow(ctx, `UPDATE event_counter SET last = last + 1 RETURNING last`).Scan(&pos); err != nil {
			t.Fatal(err)
		}
		args := []any{pos, r.StreamID, r.Version, r.ID, r.Type, r.AggregateType, r.AggregateID, r.OccurredAt, r.Data}
		q := `INSERT INTO events (position, stream_id, version, event_id, type, aggregate_type, aggregate_id, occurred_at, data)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)`
		if r.SchemaVersion != 0 {
			q = `INSERT INTO events (position, stream_id, version, event_id, type, aggregate_type, aggregate_id, occurred_at, data, schema_version)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10)`
			args = append(args, r.SchemaVersion)
		}
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// A database from before the schema_version column gets it from Migrate,
// run by several processes at once; its rows read as version 1 (and are
// upcast), new rows carry their version.
func TestMigrateAddsSchemaVersionToOlderDatabase(t *testing.T) {
	ctx := t.Context()
	_, pool := newStore(t)
	if _, err := pool.Exec(ctx, "ALTER TABLE events DROP COLUMN schema_version"); err != nil {
		t.Fatal(err)
	}
	insertRawRows(t, pool, []storetest.RawEvent{{StreamID: "Item-1", Version: 1, ID: uuid.Must(uuid.NewV7()),
		Type: storetest.PriceSetType, AggregateType: "Item", AggregateID: "1", OccurredAt: time.Now(), Data: `{"price":2.5}`}})

	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = postgres.Migrate(ctx, pool) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Migrate %d of an older database: %v", i, err)
		}
	}
	s := postgres.New(pool, storetest.NewRegistry())
	env := eventsource.NewEnvelope(storetest.Repriced{Cents: 1, Currency: "EUR"})
	env.AggregateType, env.AggregateID = "Item", "1"
	stored, err := s.Append(ctx, "Item-1", 1, []eventsource.Envelope{env})
	if err != nil {
		t.Fatal(err)
	}
	var got []any
	for env, err := range s.Load(ctx, "Item-1", 1) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, env.Event)
	}
	want := []any{storetest.Repriced{Cents: 250, Currency: "USD"}, storetest.Repriced{Cents: 1, Currency: "EUR"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load = %#v, want %#v", got, want)
	}
	var v1, v3 int
	err = pool.QueryRow(ctx, `SELECT (SELECT schema_version FROM events WHERE position = 1),
		(SELECT schema_version FROM events WHERE position = $1)`, stored[0].Position).Scan(&v1, &v3)
	if err != nil || v1 != 1 || v3 != 3 {
		t.Fatalf("stored schema versions %d and %d, %v; want 1 (the old row) and 3", v1, v3, err)
	}
}
