package kafka

import (
	"testing"

	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

func TestLag(t *testing.T) {
	cfg := testConfig(t, Config{Topic: uniqueTopic("lag"), Group: "g"})
	cleanupTopics(t, cfg)
	bustest.CheckLag(t, func(t *testing.T) bus.Bus {
		ctx := t.Context()
		b, err := New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, bus.LagConsumer)
}
