package repository

import (
	"context"
	"fmt"
	"log/slog"
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

// RelayOption configures a Relay.
type RelayOption func(*Relay)

// WithRelayLogger sets the logger that receives each failure Run retries
// (default slog.Default()).
func WithRelayLogger(l *slog.Logger) RelayOption {
	return func(r *Relay) { r.follower.Logger = l }
}

// WithRelayBackoff bounds Run's wait after a failure: it doubles from first
// up to limit, with jitter (defaults eventstore.DefaultRetryMin and
// eventstore.DefaultRetryMax).
func WithRelayBackoff(first, limit time.Duration) RelayOption {
	return func(r *Relay) { r.follower.RetryMin, r.follower.RetryMax = first, limit }
}

// NewRelay returns a relay named name (the checkpoint's name) that publishes
// from store to b.
func NewRelay(name string, store eventstore.Store, checkpoints eventstore.CheckpointStore, b bus.Bus, opts ...RelayOption) *Relay {
	r := &Relay{
		follower: eventstore.Follower{Name: name, Store: store, Checkpoints: checkpoints},
		bus:      b,
	}
	for _, opt := range opts {
		opt(r)
	}
	return r
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

// Run publishes pending events every interval until ctx ends, then returns
// nil. A failure (the bus or the store down) is logged and retried with
// backoff, so it only delays events; Status shows it. Run returns an error
// only if, when stopping, it cannot save the checkpoint of what it
// published: those events would be published again.
func (r *Relay) Run(ctx context.Context, interval time.Duration) error {
	if err := r.follower.Follow(ctx, interval, r.publish); err != nil {
		return fmt.Errorf("repository: relay: %w", err)
	}
	return nil
}

// Status reports how far the relay has published, and its failures.
func (r *Relay) Status() eventstore.FollowerStatus {
	return r.follower.Status()
}

func (r *Relay) publish(ctx context.Context, env eventsource.Envelope) error {
	return r.bus.Publish(ctx, env)
}
