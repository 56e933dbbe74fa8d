// Package projection builds read models from the event store: a Runner
// feeds a Projection the events of the types it declares, in global order,
// from a checkpoint, so it can catch up after downtime and be rebuilt from
// scratch. The same Projection can also be subscribed live on a bus with
// bus.SubscribeProjection.
package projection

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
)

// Projection handles the event types it declares.
type Projection = bus.Projection

// Resetter is implemented by projections that can drop their state, which
// Rebuild needs.
type Resetter interface {
	Reset(ctx context.Context) error
}

// Runner feeds one projection from a store.
type Runner struct {
	follower   eventstore.Follower
	projection Projection
	types      []string
}

// NewRunner returns a runner for p whose checkpoint is saved under name.
func NewRunner(name string, p Projection, store eventstore.Store, checkpoints eventstore.CheckpointStore) *Runner {
	return &Runner{
		follower:   eventstore.Follower{Name: name, Store: store, Checkpoints: checkpoints},
		projection: p,
		types:      slices.Sorted(slices.Values(p.EventTypes())),
	}
}

// CatchUp applies every event stored since the checkpoint and returns how
// many events it read (of any type). A projection error stops it; the
// failed event is applied again on the next call.
func (r *Runner) CatchUp(ctx context.Context) (int, error) {
	n, err := r.follower.CatchUp(ctx, r.apply)
	if err != nil {
		return n, fmt.Errorf("projection: %w", err)
	}
	return n, nil
}

// Run catches up every interval until ctx ends.
func (r *Runner) Run(ctx context.Context, interval time.Duration) error {
	return r.follower.Follow(ctx, interval, r.apply)
}

// Rebuild drops the projection's state and applies the whole history.
func (r *Runner) Rebuild(ctx context.Context) (int, error) {
	reset, ok := r.projection.(Resetter)
	if !ok {
		return 0, fmt.Errorf("projection: %T cannot be rebuilt: it does not implement Resetter", r.projection)
	}
	if err := reset.Reset(ctx); err != nil {
		return 0, fmt.Errorf("projection: reset: %w", err)
	}
	if err := r.follower.Reset(ctx); err != nil {
		return 0, fmt.Errorf("projection: reset checkpoint: %w", err)
	}
	return r.CatchUp(ctx)
}

func (r *Runner) apply(ctx context.Context, env eventsource.Envelope) error {
	if _, found := slices.BinarySearch(r.types, env.Type); !found {
		return nil
	}
	return r.projection.Handle(ctx, env)
}
