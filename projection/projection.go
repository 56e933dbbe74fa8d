// Package projection builds read models from the event store: a Runner
// feeds a Projection the events of the types it declares, in global order,
// from a checkpoint, so it can catch up after downtime and be rebuilt from
// scratch. The same Projection can also be subscribed live on a bus with
// bus.SubscribeProjection.
package projection

import (
	"context"
	"fmt"
	"log/slog"
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

// Option configures a Runner.
type Option func(*Runner)

// WithLogger sets the logger that receives each failure Run retries
// (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(r *Runner) { r.follower.Logger = l }
}

// WithBackoff bounds Run's wait after a failure: it doubles from first up to
// limit, with jitter (defaults eventstore.DefaultRetryMin and
// eventstore.DefaultRetryMax).
func WithBackoff(first, limit time.Duration) Option {
	return func(r *Runner) { r.follower.RetryMin, r.follower.RetryMax = first, limit }
}

// NewRunner returns a runner for p whose checkpoint is saved under name.
func NewRunner(name string, p Projection, store eventstore.Store, checkpoints eventstore.CheckpointStore, opts ...Option) *Runner {
	r := &Runner{
		follower:   eventstore.Follower{Name: name, Store: store, Checkpoints: checkpoints},
		projection: p,
		types:      slices.Sorted(slices.Values(p.EventTypes())),
	}
	for _, opt := range opts {
		opt(r)
	}
	return r
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

// Run catches up every interval until ctx ends, then returns nil. A
// projection error is logged and the event retried with backoff (Status
// shows it); it never stops Run for good. An event the projection is
// applying when ctx ends is finished and checkpointed, so a restart does
// not apply it again; Run returns an error only if that checkpoint cannot
// be saved.
func (r *Runner) Run(ctx context.Context, interval time.Duration) error {
	if err := r.follower.Follow(ctx, interval, r.apply); err != nil {
		return fmt.Errorf("projection: %w", err)
	}
	return nil
}

// Status reports how far the runner has read, and its failures.
func (r *Runner) Status() eventstore.FollowerStatus {
	return r.follower.Status()
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
