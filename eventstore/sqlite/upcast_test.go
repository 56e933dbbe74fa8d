package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"

	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/eventstore/storetest"
)

// TestUpcasting runs the schema evolution suite on rows written straight
// into the file, as an older release would have.
func TestUpcasting(t *testing.T) {
	var paths sync.Map // *sqlite.Store -> its file
	storetest.RunUpcasting(t, storetest.UpcastOptions{
		Open: func(t *testing.T, reg *eventsource.Registry) eventstore.Store {
			path := filepath.Join(t.TempDir(), "events.db")
			s := open(t, path, sqlite.WithRegistry(reg))
			paths.Store(s, path)
			return s
		},
		InsertRaw: func(t *testing.T, s eventstore.Store, rows []storetest.RawEvent) {
			path, _ := paths.Load(s)
			insertRawRows(t, path.(string), rows)
		},
		StoredSchemaVersion: func(t *testing.T, s eventstore.Store, position int64) int {
			path, _ := paths.Load(s)
			db := rawDB(t, path.(string))
			var v int
			if err := db.QueryRowContext(t.Context(), `SELECT schema_version FROM events WHERE position = ?`, position).Scan(&v); err != nil {
				t.Fatal(err)
			}
			return v
		},
	})
}

func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// insertRawRows writes rows at the next positions; a zero SchemaVersion
// leaves the column out, as a release that predates it would.
func insertRawRows(t *testing.T, path string, rows []storetest.RawEvent) {
	t.Helper()
	ctx := t.Context()
	tx, err := rawDB(t, path).BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	for _, r := range rows {
		occurred := r.OccurredAt.UTC().Format("2006-01-02T15:04:05.000000000Z07:00")
		args := []any{r.StreamID, r.Version, r.ID.String(), r.Type, r.AggregateType, r.AggregateID, occurred, r.Data}
		q := `INSERT INTO events (position, stream_id, version, event_id, type, aggregate_type, aggregate_id, occurred_at, data)
			VALUES ((SELECT COALESCE(MAX(position), 0) + 1 FROM events), ?, ?, ?, ?, ?, ?, ?, ?)`
		if r.SchemaVersion != 0 {
			q = `INSERT INTO events (position, stream_id, version, event_id, type, aggregate_type, aggregate_id, occurred_at, data, schema_version)
			VALUES ((SELECT COALESCE(MAX(position), 0) + 1 FROM events), ?, ?, ?, ?, ?, ?, ?, ?, ?)`
			args = append(args, r.SchemaVersion)
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// A file from before the schema_version column gets it when opened, by
// every process that opens it at once without a clash; its rows read as
// version 1 (and are upcast), new rows carry their version.
func TestSchemaVersionColumnAddedToOlderFile(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	reg := storetest.NewRegistry()
	s, err := sqlite.Open(ctx, path, sqlite.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	if _, err := db.ExecContext(ctx, "ALTER TABLE events DROP COLUMN schema_version"); err != nil {
		t.Fatal(err)
	}
	old := storetest.RawEvent{StreamID: "Item-1", Version: 1, Type: storetest.PriceSetType, AggregateType: "Item",
		AggregateID: "1", ID: uuid.Must(uuid.NewV7()), OccurredAt: time.Now(), Data: `{"price":2.5}`}
	insertRawRows(t, path, []storetest.RawEvent{old})

	var wg sync.WaitGroup
	stores := make([]*sqlite.Store, 3)
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = sqlite.Open(ctx, path, sqlite.WithRegistry(reg)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d of an older file: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	s = stores[0]
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
	if err := db.QueryRowContext(ctx, `SELECT (SELECT schema_version FROM events WHERE position = 1),
		(SELECT schema_version FROM events WHERE position = ?)`, stored[0].Position).Scan(&v1, &v3); err != nil || v1 != 1 || v3 != 3 {
		t.Fatalf("stored schema versions %d and %d, %v; want 1 (the old row) and 3", v1, v3, err)
	}
}
