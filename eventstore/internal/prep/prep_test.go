package prep

import (
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
)

type opened struct{}

func (opened) EventType() string { return "opened" }

func TestBatch(t *testing.T) {
	in := []eventsource.Envelope{{Event: opened{}}, eventsource.NewEnvelope(opened{})}
	out, err := Batch(in)
	if err != nil {
		t.Fatal(err)
	}
	if in[0].Type != "" || in[0].ID != uuid.Nil || !in[0].OccurredAt.IsZero() {
		t.Fatal("Batch changed the caller's envelope")
	}
	if out[0].Type != "opened" || out[0].ID.Version() != 7 || out[0].OccurredAt.IsZero() {
		t.Fatalf("defaults not filled: %+v", out[0])
	}
	if out[1].ID != in[1].ID || !out[1].OccurredAt.Equal(in[1].OccurredAt) {
		t.Fatal("Batch replaced fields that were set")
	}

	for name, bad := range map[string]eventsource.Envelope{
		"nil event":     {Type: "opened"},
		"type mismatch": {Type: "closed", Event: opened{}},
	} {
		if _, err := Batch([]eventsource.Envelope{{Event: opened{}}, bad}); !errors.Is(err, eventsource.ErrInvalidEvent) {
			t.Errorf("%s: err = %v, want ErrInvalidEvent", name, err)
		}
	}
}

func TestExpectedVersion(t *testing.T) {
	for v, ok := range map[int64]bool{-2: false, -1: true, 0: true, 7: true} {
		if err := ExpectedVersion(v); (err == nil) != ok {
			t.Errorf("ExpectedVersion(%d) = %v", v, err)
		}
	}
}
