package repository

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
)

// DefaultRelayInterval is how often Run polls the store when nothing nudges
// it (events appended by another process, or by a repository built
// without WithOutbox).
const DefaultRelayInterval = time.Second

// Relay is the outbox relay: it publishes every stored event, in global
// order, and remembers how far it got in a checkpoint. A crash between a
// repository's append and its publish, or a bus that was down, delays
// events but does not lose them.
//
// It publishes in batches: one bus.Publish call carries up to the batch
// size (default eventstore.DefaultBatchSize) events in global order, so
// every aggregate's events keep their order, and the checkpoint is saved
// after each batch. Events are published at least once: after a crash, or
// a lost lease, at most the batch in flight is published again.
type Relay struct {
	follower eventstore.Follower
	bus      bus.Bus
	lanes    int // concurrent Publish calls per batch; 0: the default
}

// DefaultRelayLanes is how many Publish calls a relay on a broker bus makes
// at once per batch (see WithRelayLanes).
const DefaultRelayLanes = 4

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

// WithRelayBatchSize sets how many events one Publish call carries at most
// (default eventstore.DefaultBatchSize). It is also the most a crash
// publishes twice.
func WithRelayBatchSize(n int) RelayOption {
	return func(r *Relay) { r.follower.BatchSize = n }
}

// WithRelayLease makes Run publish only while this relay holds the lease
// named after the relay, renewed every third of ttl (0: the default,
// eventstore.DefaultLeaseTTL). Relays of the same name in other processes
// stand by, and one takes over within about ttl when the holder dies.
// owner identifies this instance ("" : eventstore.DefaultOwner()).
func WithRelayLease(l eventstore.Lease, ttl time.Duration, owner string) RelayOption {
	return func(r *Relay) { r.follower.Lease, r.follower.LeaseTTL, r.follower.Owner = l, ttl, owner }
}

// WithRelayLanes splits each batch by aggregate into n parts published at
// once (default DefaultRelayLanes on broker buses, 1 on the in-process
// bus), so the relay keeps several broker round trips in flight as a busy
// service does. Every aggregate's events stay in one part, in order, and
// a batch is done before the next starts, so per-aggregate order holds;
// the order between aggregates, which no bus promises, does not. 1
// publishes each batch whole in global order.
func WithRelayLanes(n int) RelayOption {
	return func(r *Relay) { r.lanes = n }
}

// NewRelay returns a relay named name (the checkpoint's name) that publishes
// from store to b.
//
// When b is a bus.RawPublisher (every broker bus, also behind a decorator
// with Unwrap) and store an eventstore.RawReader, the relay publishes the
// stored payloads without decoding them: b is given eventsource.RawEvents,
// which it writes as the original events, and its consumers decode as
// usual. Any other bus is given decoded events.
func NewRelay(name string, store eventstore.Store, checkpoints eventstore.CheckpointStore, b bus.Bus, opts ...RelayOption) *Relay {
	r := &Relay{
		follower: eventstore.Follower{Name: name, Store: store, Checkpoints: checkpoints},
		bus:      b,
	}
	for _, opt := range opts {
		opt(r)
	}
	inner := bus.Unwrap(b)
	_, inProcess := inner.(*bus.InProcess)
	if r.lanes <= 0 {
		r.lanes = DefaultRelayLanes
		// In-process handlers run on the publisher's goroutine: parallel
		// lanes would run a user's handlers concurrently.
		if inProcess {
			r.lanes = 1
		}
	}
	// A bus that encodes what it publishes is given the stored payloads
	// as they are (eventsource.RawEvent): decoding them only for the bus
	// to encode them again was most of the relay's work. Its consumers
	// decode them, as any event. In-process handlers get the very values
	// published, so they need them decoded.
	_, r.follower.Raw = inner.(bus.RawPublisher)
	return r
}

// PublishPending publishes what was stored since the last call and returns
// how many events it published. It does not take the lease: run it where
// no Run of the same name is running.
func (r *Relay) PublishPending(ctx context.Context) (int, error) {
	n, err := r.follower.CatchUpBatches(ctx, r.publish)
	if err != nil {
		return n, fmt.Errorf("repository: relay: %w", err)
	}
	return n, nil
}

// Run publishes pending events until ctx ends, then returns nil: at once
// when Nudge is called (a repository built WithOutbox calls it on every
// Save), and every interval otherwise (0: DefaultRelayInterval), for
// events appended elsewhere. A failure (the bus or the store down) is
// logged and retried with backoff, so it only delays events; Status shows
// it. Run returns an error only if, when stopping, it cannot save the
// checkpoint of what it published: those events would be published again.
func (r *Relay) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultRelayInterval
	}
	if err := r.follower.FollowBatches(ctx, interval, r.publish); err != nil {
		return fmt.Errorf("repository: relay: %w", err)
	}
	return nil
}

// Nudge tells a running Run that events up to position head (0 if not
// known) were stored, so that it publishes them now rather than at its
// next poll. It never blocks.
func (r *Relay) Nudge(head int64) { r.follower.Nudge(head) }

// Status reports how far the relay has published (Position, Saved), what it
// knows is stored (Head, Lag), its state and its failures.
func (r *Relay) Status() eventstore.FollowerStatus {
	return r.follower.Status()
}

func (r *Relay) publish(ctx context.Context, batch []eventsource.Envelope) error {
	if r.lanes == 1 || len(batch) < 2*r.lanes {
		return r.bus.Publish(ctx, batch...)
	}
	parts := make([][]eventsource.Envelope, r.lanes)
	for _, env := range batch {
		i := laneOf(env.AggregateID, r.lanes)
		parts[i] = append(parts[i], env)
	}
	errs := make([]error, r.lanes)
	var wg sync.WaitGroup
	for i, part := range parts {
		if len(part) == 0 {
			continue
		}
		wg.Go(func() { errs[i] = r.bus.Publish(ctx, part...) })
	}
	wg.Wait()
	// A failed part fails the batch: it is published again whole, the
	// parts that succeeded included (at-least-once).
	return errors.Join(errs...)
}

// laneOf hashes an aggregate ID (FNV-1a) to one of n lanes.
func laneOf(id string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}
