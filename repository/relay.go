package repository

import (
	"context"
	"fmt"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
)

// Relay is the outbox relay: it publishes every stored event, in global
// order, and remembers how far it got in a checkpoint. A crash between a
// repository's append and its publish, or a bus that was down, delays
// events but does not lose them. Events are published at least once: after
// a crash, those after the last saved checkpoint are published again.
type Relay struct {
	follower eventstore.Follower
	bus      bus.Bus
}

// NewRelay returns a relay named name (the checkpoint's name) that publishes
// from store to b.
func NewRelay(name string, store eventstore.Store, checkpoints eventstore.CheckpointStore, b bus.Bus) *Relay {
	return &Relay{
		follower: eventstore.Follower{Name: name, Store: store, Checkpoints: checkpoints},
		bus:      b,
	}
}

// PublishPending publishes what was stored since the last call and returns
// how many events it published.
func (r *Relay) PublishPending(ctx context.Context) (int, error) {
	n, err := r.follower.CatchUp(ctx, r.publish)
	if err != nil {
		return n, fmt.Errorf("repository: relay: %w", err)
	}
	return n, nil
}

// Run publishes pending events every interval until ctx ends.
func (r *Relay) Run(ctx context.Context, interval time.Duration) error {
	return r.follower.Follow(ctx, interval, r.publish)
}

func (r *Relay) publish(ctx context.Context, env eventsource.Envelope) error {
	return r.bus.Publish(ctx, env)
}
