package postgres_test

import (
	"context"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
)

type InvoiceIssued struct{ Cents int64 }

func (InvoiceIssued) EventType() string { return "InvoiceIssued" }

// ExampleNew opens the store on a pgx pool after creating its tables. It
// needs a PostgreSQL server, so it is compiled but not run by go test.
func ExampleNew() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("EVENTSOURCE_POSTGRES_URL"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool); err != nil { // idempotent
		fmt.Println(err)
		return
	}
	registry := eventsource.NewRegistry()
	eventsource.MustRegister[InvoiceIssued](registry)
	store := postgres.New(pool, registry)

	env := eventsource.NewEnvelope(InvoiceIssued{Cents: 12000})
	env.AggregateType, env.AggregateID, env.Version = "Invoice", "inv-1", 1
	stored, err := store.Append(ctx, eventsource.StreamID("Invoice", "inv-1"), 0, []eventsource.Envelope{env})
	if err != nil {
		fmt.Println(err) // eventsource.ErrConcurrencyConflict if inv-1 exists
		return
	}
	fmt.Println("stored at position", stored[0].Position)
}
