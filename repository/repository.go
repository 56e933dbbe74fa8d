// Package repository loads and saves event-sourced aggregates: Load replays
// an aggregate's stream (from its latest snapshot when there is one); Save
// appends its pending events with optimistic concurrency and hands them to
// the bus in one of two modes.
//
// Direct publishing, New(store, b, ...): Save appends, then publishes the
// stored events on b itself. A crash or a bus failure between the two
// leaves events stored but unpublished (Save returns a *PublishError); a
// Relay run beside it would publish every event a second time.
// Choose it when subscribers can live with a lost event, or for tests and
// the in-process bus, where publishing cannot fail halfway.
//
// Outbox mode, New(store, nil, ..., WithOutbox(relay)): Save appends and
// nudges the Relay, which is the only publisher: it publishes the store's
// global order from its checkpoint, in batches, so a crash between append
// and publish delays events and loses none, and nothing is published twice
// except, after a crash, the one batch that was in flight. Choose it for
// broker buses in production: publishing is at-least-once end to end, and
// the nudge keeps the latency to a store read and a broker round trip.
// Run the relay (Relay.Run) in the same process, with WithRelayLease when
// several processes run it.
package repository

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
)

// ErrPublish matches a *PublishError.
var ErrPublish = errors.New("repository: publish failed")

// PublishError reports events that were stored but not published. The
// aggregate's state is saved: retrying the command would duplicate it.
// A Relay publishes the events from the store.
type PublishError struct {
	StreamID string
	Events   int
	Err      error
}

func (e *PublishError) Error() string {
	return fmt.Sprintf("repository: %d events of %q stored but not published: %v", e.Events, e.StreamID, e.Err)
}

func (e *PublishError) Unwrap() []error { return []error{ErrPublish, e.Err} }

// Repository loads and saves aggregates of type A.
type Repository[A aggregate.Root] struct {
	store         eventstore.Store
	bus           bus.Bus
	newAggregate  func() A
	aggregateType string
	snapshots     eventstore.SnapshotStore
	snapshotEvery int64
	logger        *slog.Logger
	outbox        *Relay
	instr         Instrumentation
}

// Option configures a Repository.
type Option func(*options)

type options struct {
	snapshots       eventstore.SnapshotStore
	snapshotEvery   int64
	logger          *slog.Logger
	outbox          *Relay
	instrumentation Instrumentation
}

// WithOutbox selects outbox mode: Save appends, then nudges r, which is the
// only publisher (see the package doc). The repository must be built
// without a bus: two publishers would publish every event twice.
func WithOutbox(r *Relay) Option { return func(o *options) { o.outbox = r } }

// WithSnapshots loads aggregates from their latest snapshot and saves a new
// one whenever a save crosses a multiple of every events. It applies to
// aggregates that implement aggregate.Snapshotter.
func WithSnapshots(store eventstore.SnapshotStore, every int) Option {
	return func(o *options) { o.snapshots, o.snapshotEvery = store, int64(every) }
}

// WithLogger sets the logger for snapshot problems (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// New returns a repository. newAggregate returns an empty aggregate; b may
// be nil, leaving publishing to a Relay. New panics when given both a bus
// and WithOutbox.
func New[A aggregate.Root](store eventstore.Store, b bus.Bus, newAggregate func() A, opts ...Option) *Repository[A] {
	o := options{logger: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.outbox != nil && b != nil {
		panic("repository: New with both a bus and WithOutbox: every event would be published twice")
	}
	return &Repository[A]{
		store:         store,
		bus:           b,
		newAggregate:  newAggregate,
		aggregateType: newAggregate().AggregateType(),
		snapshots:     o.snapshots,
		snapshotEvery: o.snapshotEvery,
		logger:        o.logger,
		outbox:        o.outbox,
		instr:         o.instrumentation,
	}
}

// Load rebuilds the aggregate with the given ID, from its latest snapshot
// when the stream reaches the snapshot's version. An ID with no events
// returns an error matching eventsource.ErrNotFound; the empty ID, which no
// saved aggregate can have, one matching eventsource.ErrNoAggregateID.
func (r *Repository[A]) Load(ctx context.Context, id string) (A, error) {
	if id == "" {
		// A caller bug (an unset field, a missing route parameter), not a
		// missing aggregate: ErrNotFound would invite creating it under "".
		var zero A
		return zero, fmt.Errorf("repository: load %s: %w", r.aggregateType, eventsource.ErrNoAggregateID)
	}
	streamID := eventsource.StreamID(r.aggregateType, id)
	a, from := r.restoreSnapshot(ctx, streamID, id)
	history := r.store.Load(ctx, streamID, 1)
	reached := from == 0
	if from > 0 {
		// Read from the snapshot's own event, which proves that the stream
		// reaches it: a snapshot ahead of the stream (events restored from
		// an older backup) would claim events that do not exist, and every
		// Save would then conflict.
		history = afterSnapshot(r.store.Load(ctx, streamID, from), from, &reached)
	}
	err := aggregate.Replay(a, history)
	if err == nil && !reached {
		r.logger.WarnContext(ctx, "snapshot is ahead of the stream, replaying all events",
			"stream", streamID, "snapshot_version", from)
		a = r.newAggregate()
		a.SetID(id)
		err = aggregate.Replay(a, r.store.Load(ctx, streamID, 1))
	}
	if err != nil {
		var zero A
		return zero, fmt.Errorf("repository: load %s: %w", streamID, err)
	}
	if a.Version() == 0 {
		var zero A
		return zero, fmt.Errorf("%w: %s %q", eventsource.ErrNotFound, r.aggregateType, id)
	}
	return a, nil
}

// afterSnapshot yields history, read from the snapshot's version, without
// its first event, which is the snapshot's own. It sets *reached to whether
// that event exists.
func afterSnapshot(history iter.Seq2[eventsource.Envelope, error], version int64, reached *bool) iter.Seq2[eventsource.Envelope, error] {
	return func(yield func(eventsource.Envelope, error) bool) {
		first := true
		for env, err := range history {
			if first && err == nil {
				first = false
				if env.Version != version {
					return // the stream stops short of the snapshot
				}
				*reached = true
				continue
			}
			if !yield(env, err) {
				return
			}
		}
	}
}

// restoreSnapshot returns the aggregate restored from its latest usable
// snapshot and the snapshot's version, or a fresh aggregate and 0 when it
// must be rebuilt from the first event.
func (r *Repository[A]) restoreSnapshot(ctx context.Context, streamID, id string) (A, int64) {
	a := r.newAggregate()
	a.SetID(id)
	s, ok := any(a).(aggregate.Snapshotter)
	if !ok || r.snapshots == nil {
		return a, 0
	}
	snap, err := r.snapshots.LoadSnapshot(ctx, streamID)
	switch {
	case errors.Is(err, eventsource.ErrNotFound):
		return a, 0
	case err != nil:
		r.logger.WarnContext(ctx, "snapshot unreadable, replaying all events", "stream", streamID, "error", err)
		return a, 0
	case snap.SchemaVersion != s.SnapshotSchema():
		r.logger.InfoContext(ctx, "snapshot schema changed, replaying all events",
			"stream", streamID, "snapshot_schema", snap.SchemaVersion, "schema", s.SnapshotSchema())
		return a, 0
	}
	if err := s.UnmarshalSnapshot(snap.Data); err != nil {
		r.logger.WarnContext(ctx, "snapshot does not decode, replaying all events", "stream", streamID, "error", err)
		// The failed decode may have left partial state behind.
		fresh := r.newAggregate()
		fresh.SetID(id)
		return fresh, 0
	}
	aggregate.Restore(a, id, snap.Version)
	return a, snap.Version
}

// Save appends a's pending events at a's committed version, then publishes
// them, or in outbox mode nudges the relay. A concurrent writer makes it fail with an error matching
// eventsource.ErrConcurrencyConflict, with nothing stored or published;
// reload and retry the command. A bus failure after the append returns a
// *PublishError: the events are stored.
//
// Events must belong to a: an aggregate without an ID, or an event raised
// before SetID (its envelope has no aggregate ID), fails with an error
// matching eventsource.ErrNoAggregateID (and aggregate.ErrNoID); an event
// that names another aggregate (SetID changed after raising) with one
// matching eventsource.ErrInvalidEvent. Nothing is stored or published then,
// and a keeps its pending events.
func (r *Repository[A]) Save(ctx context.Context, a A) (err error) {
	pending := a.Pending()
	if len(pending) == 0 {
		return nil
	}
	if a.ID() == "" {
		return fmt.Errorf("repository: save %s: %w: %w", r.aggregateType, eventsource.ErrNoAggregateID, aggregate.ErrNoID)
	}
	if err := r.checkPending(a.ID(), pending); err != nil {
		return fmt.Errorf("repository: save %s: %w", eventsource.StreamID(r.aggregateType, a.ID()), err)
	}
	if md, ok := eventsource.MetadataFrom(ctx); ok {
		for i := range pending {
			if pending[i].Metadata.IsZero() {
				pending[i].Metadata = md
			}
		}
	}
	streamID := eventsource.StreamID(r.aggregateType, a.ID())
	if r.instr != nil {
		var end func(error)
		ctx, end = r.instr.StartSave(ctx, r.aggregateType, streamID, pending)
		defer func() { end(err) }()
	}
	before := a.CommittedVersion()
	stored, err := r.append(ctx, streamID, before, pending)
	if err != nil {
		return fmt.Errorf("repository: save %s: %w", streamID, err)
	}
	aggregate.MarkCommitted(a)
	r.maybeSnapshot(ctx, a, streamID, before)
	if r.outbox != nil {
		r.outbox.Nudge(stored[len(stored)-1].Position)
		return nil
	}
	if r.bus == nil {
		return nil
	}
	if err := r.bus.Publish(ctx, stored...); err != nil {
		return &PublishError{StreamID: streamID, Events: len(stored), Err: err}
	}
	return nil
}

// checkPending refuses events that do not name the aggregate whose stream
// they are about to join. The store files them by stream ID, but the buses
// partition, and handlers and projections key, by the envelope's aggregate
// type and ID: an envelope that disagrees with its stream would be ordered
// and applied as another aggregate's event (or as nobody's, when empty).
func (r *Repository[A]) checkPending(id string, pending []eventsource.Envelope) error {
	for _, env := range pending {
		switch {
		case env.AggregateID == "":
			return fmt.Errorf("%w: %s event (version %d) was raised before SetID: %w",
				eventsource.ErrNoAggregateID, env.Type, env.Version, aggregate.ErrNoID)
		case env.AggregateID != id || env.AggregateType != r.aggregateType:
			return fmt.Errorf("%w: %s event (version %d) names %s %q, not %s %q",
				eventsource.ErrInvalidEvent, env.Type, env.Version, env.AggregateType, env.AggregateID, r.aggregateType, id)
		}
	}
	return nil
}

// maybeSnapshot saves a snapshot when the save crossed a multiple of the
// snapshot interval. A failure is logged: the events are what count.
func (r *Repository[A]) maybeSnapshot(ctx context.Context, a A, streamID string, before int64) {
	s, ok := any(a).(aggregate.Snapshotter)
	if !ok || r.snapshots == nil || r.snapshotEvery <= 0 || before/r.snapshotEvery == a.Version()/r.snapshotEvery {
		return
	}
	data, err := s.MarshalSnapshot()
	if err == nil {
		err = r.snapshots.SaveSnapshot(ctx, eventstore.Snapshot{
			StreamID: streamID, AggregateType: r.aggregateType, AggregateID: a.ID(),
			Version: a.Version(), SchemaVersion: s.SnapshotSchema(), Data: data, TakenAt: time.Now().UTC(),
		})
	}
	if err != nil {
		r.logger.WarnContext(ctx, "snapshot not saved", "stream", streamID, "version", a.Version(), "error", err)
	}
}
