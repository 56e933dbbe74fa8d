package rabbitmq

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/eventsource-go/eventsource"

	"github.com/eventsource-go/eventsource/bus/bustest"
)

// A return is matched to its own message even when another message in
// flight on the channel carries the same event ID: the routable copy is
// confirmed, the unroutable one fails, whichever comes first.
func TestUnroutableMatchedAmongDuplicateIDs(t *testing.T) {
	url := amqpURL(t)
	cfg := Config{URL: url, Registry: bustest.NewRegistry(), Exchange: exchange(), PublishChannels: 2}
	cleanupTopology(t, url, cfg, "default")
	b := open(t, cfg)
	defer closeBus(t, b)
	if _, err := b.Subscribe("BustestPing", bustest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	ping := bustest.NewEnvelope("u", 1, bustest.Ping{})
	pong := bustest.NewEnvelope("u", 2, bustest.Pong{})
	pong.ID = ping.ID
	// Same aggregate, so one channel; routable and unroutable copies of
	// one ID interleaved, many times over so that confirmations and
	// returns overlap.
	var events []eventsource.Envelope
	var want []int
	for i := range 200 {
		if i%3 == 1 {
			events = append(events, pong)
			want = append(want, i)
		} else {
			events = append(events, ping)
		}
	}
	err := b.Publish(context.Background(), events...)
	var perr *PublishError
	if !errors.As(err, &perr) || !errors.Is(err, ErrUnroutable) {
		t.Fatalf("Publish = %v, want a *PublishError matching ErrUnroutable", err)
	}
	var got []int
	for _, f := range perr.Failed {
		got = append(got, f.Index)
	}
	if !slices.Equal(got, want) || perr.Confirmed != len(events)-len(want) {
		t.Fatalf("failed indexes %v (confirmed %d), want %v (confirmed %d)", got, perr.Confirmed, want, len(events)-len(want))
	}
}
