package eventsource_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/repository"
)

// The README's "Aggregates, repository, bus" snippet is the code between
// the readme-aggregate markers below (TestREADMESnippetsAreCompiled).

// readme-aggregate {
type OrderPlaced struct {
	Customer   string
	TotalCents int64
}

func (OrderPlaced) EventType() string { return "OrderPlaced" }

type Order struct {
	aggregate.Base
	placed bool
}

func (o *Order) AggregateType() string { return "Order" }
func (o *Order) Apply(e eventsource.Event) {
	if _, ok := e.(OrderPlaced); ok {
		o.placed = true
	}
}
func (o *Order) Place(customer string, cents int64) error {
	if o.placed {
		return ErrAlreadyPlaced // commands validate; Apply never fails
	}
	aggregate.Raise(o, OrderPlaced{Customer: customer, TotalCents: cents})
	return nil
}

// readme-aggregate }

var ErrAlreadyPlaced = errors.New("order already placed")

func notify(_ context.Context, customer string) error {
	fmt.Println("notify", customer)
	return nil
}

// Example is the README's tour: an aggregate raises an event, the
// repository stores it and publishes it to a typed handler.
func Example() {
	ctx := context.Background()
	// readme-aggregate {
	b := bus.NewInProcess()
	bus.On(b, func(ctx context.Context, e OrderPlaced, env eventsource.Envelope) error {
		return notify(ctx, e.Customer) // typed: no type assertion
	})
	repo := repository.New(eventstore.NewMemory(), b, func() *Order { return &Order{} })
	order := &Order{}
	order.SetID("42")
	_ = order.Place("ada@example.com", 25000)
	err := repo.Save(ctx, order) // eventsource.ErrConcurrencyConflict if someone else saved first
	// readme-aggregate }
	fmt.Println("saved:", err, "version", order.Version())
	again, _ := repo.Load(ctx, "42")
	fmt.Println("placing twice:", again.Place("ada@example.com", 1))
	// Output:
	// notify ada@example.com
	// saved: <nil> version 1
	// placing twice: order already placed
}

// ExampleJSONCodec writes an envelope in the wire format and reads it back.
func ExampleJSONCodec() {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[OrderPlaced](r)
	codec := eventsource.NewJSONCodec(r)

	env := eventsource.NewEnvelope(OrderPlaced{Customer: "ada@example.com", TotalCents: 25000})
	env.ID = uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057")
	env.AggregateType, env.AggregateID, env.Version = "Order", "42", 1
	env.OccurredAt = time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	b, _ := codec.Marshal(env)
	fmt.Println(string(b))

	// Another service's bytes: keys of the payload match the Go fields
	// case-insensitively, unknown keys are ignored.
	in := `{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"OrderPlaced","aggregate_id":"42","version":1,
		"data":{"customer":"grace@example.com","totalcents":100,"gift_wrap":true}}`
	got, err := codec.Unmarshal([]byte(in))
	fmt.Printf("%+v %v\n", got.Event, err)
	_, err = codec.Unmarshal([]byte(`{"type":"OrderPlaced"}`))
	fmt.Println(errors.Is(err, eventsource.ErrMalformed))
	// Output:
	// {"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"OrderPlaced","aggregate_type":"Order","aggregate_id":"42","version":1,"occurred_at":"2026-01-02T03:04:05.123456Z","data":{"Customer":"ada@example.com","TotalCents":25000}}
	// {Customer:grace@example.com TotalCents:100} <nil>
	// true
}

// ExampleStreamID names an aggregate's stream and parses it back.
func ExampleStreamID() {
	id := eventsource.StreamID("Order", "42")
	typ, aggID, err := eventsource.ParseStreamID(id)
	fmt.Println(typ, aggID, err)
	// Output: Order 42 <nil>
}

// readmeSnippet matches a README code block that says where its code is:
// an HTML comment naming a file and a marker, then a fenced Go block.
var readmeSnippet = regexp.MustCompile("(?s)<!-- compiled: (\\S+) (\\S+) -->\\s*```go\\n(.*?)```")

// TestREADMESnippetsAreCompiled holds the README's Go snippets to the
// example code they were taken from, so that they always compile and run:
// each block the README marks "<!-- compiled: FILE MARKER -->" must be the
// regions of FILE between "// MARKER {" and "// MARKER }", each region
// less its indentation, joined by a blank line.
func TestREADMESnippetsAreCompiled(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeSnippet.FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < 2 {
		t.Fatalf("README marks %d compiled snippets, want at least 2", len(blocks))
	}
	for _, b := range blocks {
		file, marker, snippet := b[1], b[2], b[3]
		src, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("README snippet %s: %v", marker, err)
			continue
		}
		want := strings.Join(regions(string(src), marker), "\n\n")
		if want == "" {
			t.Errorf("%s has no region %q", file, marker)
			continue
		}
		if strings.TrimSpace(snippet) != strings.TrimSpace(want) {
			t.Errorf("README snippet %s differs from %s; copy the region into the README:\n%s", marker, file, want)
		}
	}
}

// regions returns the text between "// marker {" and "// marker }" lines,
// dedented by the indentation of the opening marker.
func regions(src, marker string) []string {
	var out []string
	var cur []string
	in, indent := false, ""
	for line := range strings.Lines(src) {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "// "+marker+" {":
			in, cur = true, nil
			indent = line[:len(line)-len(strings.TrimLeft(line, "\t"))]
		case trimmed == "// "+marker+" }":
			in = false
			out = append(out, strings.TrimRight(strings.Join(cur, ""), "\n"))
		case in:
			cur = append(cur, strings.TrimPrefix(line, indent))
		}
	}
	return out
}
