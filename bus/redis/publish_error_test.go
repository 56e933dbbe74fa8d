package redis

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

// TestPublishErrorUnwrapsToItsCause: with Redis gone, a publish error of
// one event or of a batch lets errors.As find the network error.
func TestPublishErrorUnwrapsToItsCause(t *testing.T) {
	url, proxy := proxiedURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := New(ctx, Config{URL: url, Registry: bustest.NewRegistry(), StreamPrefix: prefix(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer closeBus(t, b)
	proxy.stop()
	for _, n := range []int{1, 3} {
		events := make([]eventsource.Envelope, n)
		for i := range events {
			events[i] = bustest.NewEnvelope("a", int64(i+1), bustest.Ping{N: i})
		}
		err := b.Publish(ctx, events...)
		var opErr *net.OpError
		if !errors.As(err, &opErr) {
			t.Errorf("Publish of %d events with Redis gone = %v (%T), want an error wrapping a *net.OpError", n, err, err)
		}
	}
}
