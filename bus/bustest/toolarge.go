package bustest

import (
	"errors"
	"strings"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// An event over the broker's size limit is one bad record, not an outage:
// its Publish fails at once with bus.ErrTooLarge (publishing it again
// cannot succeed, so a bus that retries it wedges its caller), and the
// bus, its connection and its consumers go on: the events published
// before and after it are delivered once each, and no reconnect happened.
func (s *suite) testTooLarge(t *testing.T) {
	if s.features.MaxEventBytes <= 0 {
		t.Skip("bus declares no maximum event size")
	}
	ns := namespace(t)
	b := s.open(t, ns, "")
	rec := NewRecorder()
	if _, err := b.Subscribe(Ping{}.EventType(), rec); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	if err := b.Publish(s.ctx(t), NewEnvelope("small", 1, Ping{N: 1})); err != nil {
		t.Fatalf("Publish of a small event: %v", err)
	}
	rec.WaitFor(t, 1, s.features.Timeout)
	reconnects := b.Stats().Reconnects

	big := NewEnvelope("big", 1, Ping{N: 2})
	big.Metadata.Extra = map[string]string{"padding": strings.Repeat("x", s.features.MaxEventBytes+1)}
	err := b.Publish(s.ctx(t), big)
	if !errors.Is(err, bus.ErrTooLarge) {
		t.Fatalf("Publish of an event over %d bytes = %v, want an error matching bus.ErrTooLarge", s.features.MaxEventBytes, err)
	}

	after := []eventsource.Envelope{NewEnvelope("small", 2, Ping{N: 3}), NewEnvelope("small", 3, Ping{N: 4})}
	if err := b.Publish(s.ctx(t), after...); err != nil {
		t.Fatalf("Publish after the refused event: %v", err)
	}
	rec.WaitFor(t, 3, s.features.Timeout)
	s.drain(t, b)
	got := rec.Got()
	if len(got) != 3 {
		t.Fatalf("delivered %d events, want the 3 small ones", len(got))
	}
	for _, g := range got {
		if g.AggregateID == "big" {
			t.Errorf("the refused event was delivered")
		}
	}
	if n := b.Stats().Reconnects; n != reconnects {
		t.Errorf("the refused event cost %d reconnects, want none", n-reconnects)
	}
}
