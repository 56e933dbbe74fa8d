package redis

import (
	"testing"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

func TestLag(t *testing.T) {
	url := redisURL(t)
	cfg := Config{URL: url, StreamPrefix: "lag" + uuid.NewString()[:8], Group: "g", Registry: bustest.NewRegistry()}
	cleanupKeys(t, url, cfg.StreamPrefix)
	bustest.CheckLag(t, func(t *testing.T) bus.Bus { return open(t, cfg) }, bus.LagBacklog)
}
