package eventstore

import (
	"context"
	"fmt"
	"time"

	"github.com/eventsource-go/eventsource"
)

// Follower reads a store's global order from a named checkpoint. Projection
// runners and the repository's outbox relay are both followers: they differ
// only in what they do with each event.
type Follower struct {
	Name        string // the checkpoint's name; unique per reader
	Store       Store
	Checkpoints CheckpointStore
	// SaveEvery saves the checkpoint after this many events (default 1).
	// A crash replays at most this many events: delivery is at-least-once.
	SaveEvery int
}

// CatchUp hands every event after the checkpoint to fn, in position order,
// then saves the checkpoint. It stops at the first error from fn, saving
// the position of the last event fn accepted, so the failed event is read
// again next time. It returns how many events fn accepted.
func (f *Follower) CatchUp(ctx context.Context, fn func(context.Context, eventsource.Envelope) error) (int, error) {
	from, err := f.Checkpoints.Checkpoint(ctx, f.Name)
	if err != nil {
		return 0, fmt.Errorf("eventstore: follower %q: read checkpoint: %w", f.Name, err)
	}
	every := max(f.SaveEvery, 1)
	done, last, saved := 0, from, from
	save := func() error {
		if last == saved {
			return nil
		}
		if err := f.Checkpoints.SaveCheckpoint(ctx, f.Name, last); err != nil {
			return fmt.Errorf("eventstore: follower %q: save checkpoint %d: %w", f.Name, last, err)
		}
		saved = last
		return nil
	}
	for env, err := range f.Store.ReadAll(ctx, from+1) {
		if err != nil {
			return done, joinSave(fmt.Errorf("eventstore: follower %q: read after %d: %w", f.Name, last, err), save())
		}
		if err := fn(ctx, env); err != nil {
			return done, joinSave(fmt.Errorf("eventstore: follower %q: event at position %d: %w", f.Name, env.Position, err), save())
		}
		done++
		last = env.Position
		if done%every == 0 {
			if err := save(); err != nil {
				return done, err
			}
		}
	}
	return done, save()
}

func joinSave(err, saveErr error) error {
	if saveErr != nil {
		return fmt.Errorf("%w (and %w)", err, saveErr)
	}
	return err
}

// Reset moves the checkpoint back to the start, so the next CatchUp reads
// everything again.
func (f *Follower) Reset(ctx context.Context) error {
	return f.Checkpoints.SaveCheckpoint(ctx, f.Name, 0)
}

// Follow calls CatchUp, then again every interval, until ctx ends; it
// returns nil then. A failed pass is returned at once: the caller decides
// whether to retry (the checkpoint keeps the failed event for next time).
func (f *Follower) Follow(ctx context.Context, interval time.Duration, fn func(context.Context, eventsource.Envelope) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := f.CatchUp(ctx, fn); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
