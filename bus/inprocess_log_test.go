package bus_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// TestInProcessLogKeys: the failure line carries the keys every bus's
// lines carry (bus, handler, event_type, event_id).
func TestInProcessLogKeys(t *testing.T) {
	var logs bytes.Buffer
	b := bus.NewInProcess(bus.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	defer b.Close(context.Background())
	failing := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return errors.New("boom") })
	if _, err := b.Subscribe("BustestPing", failing, bus.WithName("failing")); err != nil {
		t.Fatal(err)
	}
	env := ping("a", 1)
	if err := b.Publish(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"bus":"inprocess"`, `"handler":"failing"`, `"event_type":"BustestPing"`, `"event_id":"` + env.ID.String() + `"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the failure line lacks %s:\n%s", want, logs.String())
		}
	}
}
