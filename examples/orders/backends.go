package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
)

const defaultStore = "memory"

// openStore returns the store named by -store and a function that closes it.
func openStore(ctx context.Context, cfg config, registry *eventsource.Registry) (eventstore.Store, func(), error) {
	switch cfg.store {
	case "memory":
		return eventstore.NewMemory(), func() {}, nil
	case "sqlite", "postgres":
		return nil, nil, fmt.Errorf("-store %s is not available in this build yet; use -store memory", cfg.store)
	}
	return nil, nil, fmt.Errorf("unknown -store %q: use memory, sqlite or postgres", cfg.store)
}

// openBus returns the bus named by -bus.
func openBus(ctx context.Context, cfg config, registry *eventsource.Registry, logger *slog.Logger) (bus.Bus, error) {
	switch cfg.bus {
	case "memory":
		return bus.NewInProcess(bus.WithLogger(logger)), nil
	case "redis", "rabbitmq", "kafka":
		return nil, fmt.Errorf("-bus %s is not available in this build yet; use -bus memory", cfg.bus)
	}
	return nil, fmt.Errorf("unknown -bus %q: use memory, redis, rabbitmq or kafka", cfg.bus)
}
