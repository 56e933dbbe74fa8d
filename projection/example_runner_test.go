package projection_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/projection"
)

// ExampleRunner_Run follows the store live: an append wakes the runner at
// once (the store announces it), and Status reports where it is.
func ExampleRunner_Run() {
	store := eventstore.NewMemory()
	r := &revenue{}
	runner := projection.NewRunner("revenue", r, store, eventstore.NewMemoryCheckpoints())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx, time.Minute) }() // the poll is only a fallback

	sell(ctx, store, "hamlet", 4000, 2500)
	// Status moves once the projection has applied an event.
	for deadline := time.Now().Add(10 * time.Second); runner.Status().Position < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // polling, bounded by the deadline
	}
	st := runner.Status()
	fmt.Println("revenue", r.cents, "position", st.Position, "lag", st.Lag())

	cancel()
	fmt.Println("stopped:", <-done)
	// Output:
	// revenue 6500 position 2 lag 0
	// stopped: <nil>
}

// salesTable keeps revenue per show in a SQL table.
type salesTable struct{}

func (salesTable) EventTypes() []string { return []string{"TicketSold"} }
func (salesTable) Apply(ctx context.Context, tx *sql.Tx, env eventsource.Envelope) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO show_revenue (show, cents) VALUES ($1, $2)
		ON CONFLICT (show) DO UPDATE SET cents = show_revenue.cents + excluded.cents`,
		env.AggregateID, env.Event.(TicketSold).Cents)
	return err
}

// ExampleNewSQLRunner keeps a read model in the store's SQLite file: each
// batch of rows commits with the checkpoint, so a crash never applies an
// event twice to the table. On PostgreSQL, pass
// stdlib.OpenDBFromPool(pool) (github.com/jackc/pgx/v5/stdlib).
func ExampleNewSQLRunner() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "shop.db")

	reg := eventsource.NewRegistry()
	eventsource.MustRegister[TicketSold](reg)
	store, err := sqlite.Open(ctx, path, sqlite.WithRegistry(reg))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	// The read model's connection: every transaction writes, so it takes
	// the write lock at BEGIN and waits for it.
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE show_revenue (show TEXT PRIMARY KEY, cents INTEGER NOT NULL)`); err != nil {
		panic(err)
	}

	runner, err := projection.NewSQLRunner(ctx, "show-revenue", salesTable{}, store, db)
	if err != nil {
		panic(err)
	}
	sell(ctx, store, "hamlet", 4000, 4000)
	sell(ctx, store, "lear", 3500)
	n, err := runner.CatchUp(ctx)
	fmt.Println("applied", n, err)

	var cents int64
	_ = db.QueryRowContext(ctx, `SELECT cents FROM show_revenue WHERE show = 'hamlet'`).Scan(&cents)
	var checkpoint int64
	_ = db.QueryRowContext(ctx, `SELECT position FROM projection_checkpoints WHERE name = 'show-revenue'`).Scan(&checkpoint)
	fmt.Println("hamlet", cents, "checkpoint", checkpoint)
	// Output:
	// applied 3 <nil>
	// hamlet 8000 checkpoint 3
}
