package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
)

type NoteWritten struct{ Text string }

func (NoteWritten) EventType() string { return "NoteWritten" }

// ExampleOpen stores events in a SQLite file; a store opened later on the
// same file reads them back. The registry decodes the payloads.
func ExampleOpen() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "sqlite-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "events.db")
	registry := eventsource.NewRegistry()
	eventsource.MustRegister[NoteWritten](registry)

	store, err := sqlite.Open(ctx, path, sqlite.WithRegistry(registry))
	if err != nil {
		fmt.Println(err)
		return
	}
	env := eventsource.NewEnvelope(NoteWritten{Text: "hello"})
	env.AggregateType, env.AggregateID, env.Version = "Note", "n1", 1
	if _, err := store.Append(ctx, eventsource.StreamID("Note", "n1"), 0, []eventsource.Envelope{env}); err != nil {
		fmt.Println(err)
	}
	_ = store.Close()

	reopened, err := sqlite.Open(ctx, path, sqlite.WithRegistry(registry))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reopened.Close()
	for env, err := range reopened.ReadAll(ctx, 1) {
		fmt.Println(env.Position, env.AggregateID, env.Event.(NoteWritten).Text, err)
	}
	// Output: 1 n1 hello <nil>
}
