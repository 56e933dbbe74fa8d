package rabbitmq

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

// The broker's max_message_size is below MaxMessageSize (a RabbitMQ whose
// limit was lowered, or a 4.x broker with a bus configured for 3.x): the
// broker closes the publishing channel over the event. Publish fails with
// ErrRefused and bus.ErrTooLarge, once, instead of sending the event again
// on every new connection until its ctx ends; the next publish works.
func TestPublishOverBrokerLimitRefused(t *testing.T) {
	url := amqpURL(t)
	c := Config{URL: url, Registry: bustest.NewRegistry(), Exchange: "toolarge-" + t.Name(), Retry: fastRetry,
		AllowUnroutable: true, MaxMessageSize: 1 << 30}
	cleanupTopology(t, url, c, "default")
	b := open(t, c)
	big := bustest.NewEnvelope("big", 1, bustest.Ping{N: 1})
	// RabbitMQ's max_message_size is at most 512 MiB; 128 MiB by default
	// on 3.x, 16 MiB on 4.x.
	big.Metadata.Extra = map[string]string{"padding": strings.Repeat("x", 129<<20)}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err := b.Publish(ctx, big)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, bus.ErrTooLarge) {
		t.Fatalf("Publish over the broker's limit = %v, want ErrRefused and bus.ErrTooLarge", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Publish took until its ctx ended: %v", err)
	}
	if n := b.Stats().Reconnects; n > 1 {
		t.Errorf("%d reconnects for one refused event, want at most 1", n)
	}
	if err := b.Publish(ctx, bustest.NewEnvelope("small", 1, bustest.Ping{N: 2})); err != nil {
		t.Fatalf("Publish after the refused event: %v", err)
	}
}
