package consumer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

// lines splits what the logger wrote into its records.
func lines(b *testenv.Buffer) [][]byte {
	var out [][]byte
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		out = append(out, bytes.Clone(sc.Bytes()))
	}
	return out
}

// TestLogKeys checks the dispatcher's lines as a transport logs them
// (its logger carries bus and group): no key twice, and the keys every
// line about an event carries.
func TestLogKeys(t *testing.T) {
	var out testenv.Buffer
	s := newSettler()
	d, err := New(Config{
		Registry: registry(), Settler: s, Group: "g",
		Retry:  RetryPolicy{MaxRetries: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 2},
		Logger: slog.New(slog.NewJSONHandler(&out, nil)).With(slog.String("bus", "test"), slog.String("group", "g")),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	failing := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return errors.New("boom") })
	if _, err := d.Subscribe("Ping", failing, bus.WithName("failing")); err != nil {
		t.Fatal(err)
	}
	dispatch(t, d, message(t, envelope("a", 1, Ping{1})))
	waitUntil(t, "the dead letter", func() bool { _, dl, _ := s.snapshot(); return len(dl) == 1 })
	drain(t, d)

	want := map[string][]string{
		"event handler failed": {"bus", "group", "handler", "event_type", "event_id", "attempt"},
		"event dead-lettered":  {"bus", "group", "handler", "event_type", "event_id", "attempt"},
	}
	seen := map[string]bool{}
	for _, line := range lines(&out) {
		keys := topLevelKeys(t, line)
		count := map[string]int{}
		for _, k := range keys {
			if count[k]++; count[k] == 2 {
				t.Errorf("key %q twice in %s", k, line)
			}
		}
		var rec struct{ Msg string }
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatal(err)
		}
		seen[rec.Msg] = true
		for _, k := range want[rec.Msg] {
			if count[k] == 0 {
				t.Errorf("no key %q in %s", k, line)
			}
		}
	}
	for msg := range want {
		if !seen[msg] {
			t.Errorf("no %q line in:\n%s", msg, bytes.Join(lines(&out), []byte("\n")))
		}
	}
}

// topLevelKeys returns the keys of a JSON object in order, duplicates
// included (encoding/json keeps the last one silently).
func topLevelKeys(t *testing.T, line []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", line)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}
