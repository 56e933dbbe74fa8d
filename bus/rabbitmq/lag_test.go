package rabbitmq

import (
	"testing"

	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

func TestLag(t *testing.T) {
	url := amqpURL(t)
	cfg := Config{URL: url, Exchange: exchange(), Group: "g", Registry: bustest.NewRegistry()}
	cleanupTopology(t, url, cfg, cfg.Group)
	bustest.CheckLag(t, func(t *testing.T) bus.Bus { return open(t, cfg) }, bus.LagQueueDepth)
}
