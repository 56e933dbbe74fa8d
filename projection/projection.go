package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/internal/sleep"
)

// Projection handles the event types it declares.
type Projection = bus.Projection

// Resetter is implemented by projections that can drop their state, which
// Rebuild needs.
type Resetter interface {
	Reset(ctx context.Context) error
}

// Defaults of a Runner.
const (
	// DefaultCheckpointEvery is how many events a Runner applies between
	// two checkpoint saves: a crash applies at most this many again (a
	// SQL runner's transaction never does).
	DefaultCheckpointEvery = 1000
	// DefaultCheckpointInterval bounds the time between two saves while
	// a pass runs, for projections slow enough that DefaultCheckpointEvery
	// events take long.
	DefaultCheckpointInterval = time.Second
	// DefaultMaxAttempts is how many times Run applies a failing event
	// before the failure policy (halt, or park) applies.
	DefaultMaxAttempts = 10
	// DefaultInterval is Run's polling interval when it is given 0. Stores
	// that announce appends (eventstore.Notifier) wake it sooner.
	DefaultInterval = time.Second
)

// ErrHalted matches the error of a Runner that stopped on an event its
// projection kept failing to apply (see HaltError).
var ErrHalted = errors.New("projection: halted")

// HaltError is what Run returns, and Status reports, when the projection
// failed on one event MaxAttempts times and the policy is to halt (the
// default): nothing after that event is applied until the runner is run
// again, after the projection or the data was fixed.
type HaltError struct {
	Projection string
	Position   int64
	EventID    uuid.UUID
	Type       string
	Attempts   int
	Err        error // the projection's last error
}

func (e *HaltError) Error() string {
	return fmt.Sprintf("projection %q halted at position %d (%s) after %d attempts: %v",
		e.Projection, e.Position, e.Type, e.Attempts, e.Err)
}

// Unwrap returns ErrHalted and the projection's error.
func (e *HaltError) Unwrap() []error { return []error{ErrHalted, e.Err} }

// ParkedEvent is an event a runner gave up on and skipped, under the park
// policy (WithParking), with why.
type ParkedEvent struct {
	Projection    string
	Position      int64
	EventID       uuid.UUID
	Type          string
	AggregateType string
	AggregateID   string
	Attempts      int
	Error         string
	ParkedAt      time.Time
}

// Parker records parked events durably, for an operator to look at and
// replay. A Runner keeps those it parked in memory too (Parked); a SQL
// runner records them in its database, in the transaction that moves its
// checkpoint past them.
type Parker interface {
	Park(ctx context.Context, e ParkedEvent) error
}

// Status is what a Runner reports: the follower's figures (position, head,
// lag in events and in time, state, failures), with State StateHalted
// after a halt and StateRetrying while an event is being retried.
type Status struct {
	eventstore.FollowerStatus
	// Attempts is how many times the event at Position+1 failed in a row
	// (0 when nothing is failing).
	Attempts int
	// Parked counts the events this runner parked since it was created.
	Parked int
	// Halted is the reason of a halt, nil unless State is StateHalted.
	Halted *HaltError
}

// Runner feeds one projection from a store, from a named checkpoint: it
// catches up, then follows live.
type Runner struct {
	follower   eventstore.Follower
	projection Projection // nil for a SQL runner
	sql        *sqlRunner // nil for a plain runner
	types      []string
	maxAtt     int
	park       bool
	parker     Parker

	mu       sync.Mutex
	attempts int   // failed tries of the event at position failing
	failing  int64 // 0 when nothing is failing
	halted   *HaltError
	parked   []ParkedEvent
	lastErr  error
	lastAt   time.Time
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

// WithCheckpoint saves the checkpoint every n events or every d while a
// pass runs, whichever comes first (defaults DefaultCheckpointEvery and
// DefaultCheckpointInterval), and always at the end of a pass and at a
// graceful stop. n = 1 saves after every event (a crash then applies at
// most one event again, at the cost of a write per event). For a SQL
// runner, n and d bound one transaction, but for the one that commits
// again, whole, the events before an event the projection failed on.
func WithCheckpoint(n int, d time.Duration) Option {
	return func(r *Runner) {
		if n > 0 {
			r.follower.SaveEvery, r.follower.BatchSize = n, n
		}
		if d > 0 {
			r.follower.SaveInterval = d
		}
	}
}

// WithLease makes Run apply events only while this runner holds the lease
// named after the projection (renewed every third of ttl; 0:
// eventstore.DefaultLeaseTTL): runners of the same name in other processes
// stand by (State standby) and one takes over within about ttl when the
// holder dies. owner identifies this instance ("": eventstore.DefaultOwner()).
func WithLease(l eventstore.Lease, ttl time.Duration, owner string) Option {
	return func(r *Runner) { r.follower.Lease, r.follower.LeaseTTL, r.follower.Owner = l, ttl, owner }
}

// WithMaxAttempts sets how many times Run applies a failing event, with
// backoff between attempts, before the failure policy applies (default
// DefaultMaxAttempts): halt, or park with WithParking.
func WithMaxAttempts(n int) Option {
	return func(r *Runner) {
		if n > 0 {
			r.maxAtt = n
		}
	}
}

// WithParking makes Run park an event the projection failed on
// MaxAttempts times, and go on with the next, instead of halting. p
// records it durably (nil: only in memory, see Parked; a SQL runner
// records it in its database in any case).
func WithParking(p Parker) Option {
	return func(r *Runner) { r.park, r.parker = true, p }
}

// NewRunner returns a runner for p whose checkpoint is saved under name.
func NewRunner(name string, p Projection, store eventstore.Store, checkpoints eventstore.CheckpointStore, opts ...Option) *Runner {
	r := newRunner(name, p.EventTypes(), store, checkpoints, opts)
	r.projection = p
	return r
}

func newRunner(name string, types []string, store eventstore.Store, checkpoints eventstore.CheckpointStore, opts []Option) *Runner {
	r := &Runner{
		follower: eventstore.Follower{
			Name: name, Store: store, Checkpoints: checkpoints,
			SaveEvery: DefaultCheckpointEvery, BatchSize: DefaultCheckpointEvery, SaveInterval: DefaultCheckpointInterval,
		},
		types:  slices.Sorted(slices.Values(types)),
		maxAtt: DefaultMaxAttempts,
	}
	for _, opt := range opts {
		opt(r)
	}
	return r
}

// CatchUp applies every event stored since the checkpoint and returns how
// many events it read (of any type). A projection error stops it at once,
// without retry; the failed event is applied again on the next call.
func (r *Runner) CatchUp(ctx context.Context) (int, error) {
	var (
		n   int
		err error
	)
	if r.sql != nil {
		n, err = r.follower.CatchUpBatches(ctx, func(ctx context.Context, batch []eventsource.Envelope) error {
			return r.sql.applyBatch(ctx, batch, false)
		})
	} else {
		n, err = r.follower.CatchUp(ctx, func(ctx context.Context, env eventsource.Envelope) error {
			return r.applyOnce(ctx, env)
		})
	}
	if err != nil {
		return n, fmt.Errorf("projection: %w", err)
	}
	return n, nil
}

// Run catches up, then applies events as they are stored, until ctx ends;
// then it returns nil. It wakes as soon as the store announces an append
// (eventstore.Notifier: the memory and SQLite stores in-process, PostgreSQL
// across processes) and polls every interval otherwise (0:
// DefaultInterval).
//
// A projection error is retried with backoff up to MaxAttempts times
// (Status says retrying); then Run halts, returning a *HaltError, or with
// WithParking parks the event and goes on. A store failure is retried with
// backoff for as long as ctx lives. An event being applied when ctx ends is
// finished and checkpointed, so a restart does not apply it again; Run
// returns an error only if that checkpoint cannot be saved.
func (r *Runner) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultInterval
	}
	r.mu.Lock()
	r.halted, r.attempts, r.failing = nil, 0, 0
	r.mu.Unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var err error
	if r.sql != nil {
		err = r.follower.FollowBatches(ctx, interval, func(ctx context.Context, batch []eventsource.Envelope) error {
			err := r.sql.applyBatch(ctx, batch, true)
			r.haltOn(err, cancel)
			return err
		})
	} else {
		err = r.follower.Follow(ctx, interval, func(ctx context.Context, env eventsource.Envelope) error {
			err := r.applyRetrying(ctx, env)
			r.haltOn(err, cancel)
			return err
		})
	}
	if h := r.haltErr(); h != nil {
		return h
	}
	if err != nil {
		return fmt.Errorf("projection: %w", err)
	}
	return nil
}

// haltOn stops Run's follower when err is a halt: it returns nil at once,
// having saved what was applied before the failing event.
func (r *Runner) haltOn(err error, cancel context.CancelCauseFunc) {
	var h *HaltError
	if errors.As(err, &h) {
		r.mu.Lock()
		r.halted = h
		r.mu.Unlock()
		r.logger().ErrorContext(context.Background(), "projection halted", "projection", h.Projection,
			"position", h.Position, "event_type", h.Type, "event_id", h.EventID.String(), "attempts", h.Attempts, "error", h.Err)
		cancel(h)
	}
}

func (r *Runner) haltErr() *HaltError {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.halted
}

// Nudge tells a running Run that events up to head (0 if unknown) were
// stored, so that it applies them now. Stores that announce appends make
// it unnecessary; it never blocks.
func (r *Runner) Nudge(head int64) { r.follower.Nudge(head) }

// Status reports how far the runner has applied, what it knows is stored,
// its state and its failures. It is safe to call while Run runs.
func (r *Runner) Status() Status {
	st := Status{FollowerStatus: r.follower.Status()}
	if r.sql != nil {
		// While the Follower still stands at the start of a batch, what
		// the batch committed so far is where the read model is.
		if from, at := r.sql.progress(); st.Position == from && at > from {
			st.Position, st.Saved, st.Head = at, max(st.Saved, at), max(st.Head, at)
			if st.Lag() == 0 {
				st.LagTime = 0
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st.Attempts, st.Parked, st.Halted = r.attempts, len(r.parked), r.halted
	if r.lastErr != nil && !r.lastAt.Before(st.LastFailure) {
		st.LastError, st.LastFailure = r.lastErr, r.lastAt
	}
	switch {
	case r.halted != nil:
		st.State = eventstore.StateHalted
	case r.attempts > 0 && st.State != eventstore.StateStopped:
		st.State = eventstore.StateRetrying
		st.ConsecutiveFailures = max(st.ConsecutiveFailures, r.attempts)
	}
	return st
}

// Parked returns the events this runner parked since it was created (a SQL
// runner: every event parked under its name, from its database).
func (r *Runner) Parked(ctx context.Context) ([]ParkedEvent, error) {
	if r.sql != nil {
		return r.sql.parkedEvents(ctx)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.parked), nil
}

// Rebuild drops the projection's state and applies the whole history. Do
// not call it while Run runs.
func (r *Runner) Rebuild(ctx context.Context) (int, error) {
	if r.sql != nil {
		if err := r.sql.reset(ctx); err != nil {
			return 0, err
		}
		return r.CatchUp(ctx)
	}
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

func (r *Runner) wants(typ string) bool {
	_, found := slices.BinarySearch(r.types, typ)
	return found
}

// applyOnce hands env to the projection if it declared its type. A panic
// is an error, so that it is retried and reported like one.
func (r *Runner) applyOnce(ctx context.Context, env eventsource.Envelope) (err error) {
	if !r.wants(env.Type) {
		return nil
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("projection panicked: %v", p)
		}
	}()
	return r.projection.Handle(ctx, env)
}

// applyRetrying is Run's per-event step: the projection is retried in
// place, so a failing event does not make the pass read again.
func (r *Runner) applyRetrying(ctx context.Context, env eventsource.Envelope) error {
	for {
		err := r.applyOnce(ctx, env)
		if err == nil {
			r.succeeded()
			return nil
		}
		next, stop := r.failed(ctx, env, err)
		if stop != nil {
			return stop
		}
		if !next {
			return nil // parked
		}
	}
}

// succeeded clears the failure count after an event applied.
func (r *Runner) succeeded() {
	r.mu.Lock()
	r.attempts, r.failing = 0, 0
	r.mu.Unlock()
}

// failed records a failed attempt on env. It returns retry=true after
// waiting the backoff; retry=false, stop=nil once the event is parked; or
// a stop error: a halt, ctx's end, or a park that could not be recorded.
func (r *Runner) failed(ctx context.Context, env eventsource.Envelope, err error) (retry bool, stop error) {
	// A failure once ctx ended (a stop, a halt, a lost lease) is most
	// likely the end interrupting the projection, not the event's fault:
	// it does not count towards halting or parking, and the next run tries
	// the event again.
	if ctx.Err() != nil {
		return false, fmt.Errorf("stopped while applying position %d: %w (%w)", env.Position, context.Cause(ctx), err)
	}
	r.mu.Lock()
	// The count is of this event's tries only. Another event's failures
	// may be left over: one that then succeeded in a SQL transaction that
	// failed further on, or one that another runner applied while this one
	// had lost its lease.
	if r.failing != env.Position {
		r.attempts, r.failing = 0, env.Position
	}
	r.attempts++
	n := r.attempts
	r.lastErr, r.lastAt = err, time.Now()
	r.mu.Unlock()
	if n >= r.maxAtt {
		if !r.park {
			return false, &HaltError{Projection: r.follower.Name, Position: env.Position, EventID: env.ID, Type: env.Type, Attempts: n, Err: err}
		}
		pe := r.parkedEvent(env, n, err)
		var perr error
		switch {
		case r.sql != nil: // in the transaction that moves the checkpoint past it
			perr = r.sql.parkTx(ctx, env, pe)
		case r.parker != nil:
			perr = r.parker.Park(ctx, pe)
		}
		if perr != nil {
			return false, fmt.Errorf("park event at %d: %w", env.Position, perr)
		}
		r.mu.Lock()
		r.parked = append(r.parked, pe)
		r.attempts, r.failing = 0, 0
		r.mu.Unlock()
		r.logger().WarnContext(ctx, "projection parked an event", "projection", r.follower.Name,
			"position", env.Position, "event_type", env.Type, "event_id", env.ID.String(), "attempt", n, "error", err)
		return false, nil
	}
	d := r.backoff(n)
	r.logger().WarnContext(ctx, "projection failed, retrying", "projection", r.follower.Name,
		"position", env.Position, "event_type", env.Type, "event_id", env.ID.String(), "attempt", n, "retry_in", d, "error", err)
	if !sleep.For(ctx, d) {
		return false, fmt.Errorf("stopped while retrying position %d: %w", env.Position, context.Cause(ctx))
	}
	return true, nil
}

func (r *Runner) parkedEvent(env eventsource.Envelope, attempts int, err error) ParkedEvent {
	return ParkedEvent{
		Projection: r.follower.Name, Position: env.Position, EventID: env.ID, Type: env.Type,
		AggregateType: env.AggregateType, AggregateID: env.AggregateID,
		Attempts: attempts, Error: err.Error(), ParkedAt: time.Now().UTC(),
	}
}

// backoff doubles from RetryMin up to RetryMax, drawn from the upper half.
func (r *Runner) backoff(failures int) time.Duration {
	lo, hi := r.follower.RetryMin, r.follower.RetryMax
	if lo <= 0 {
		lo = eventstore.DefaultRetryMin
	}
	if hi <= 0 {
		hi = eventstore.DefaultRetryMax
	}
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, max(hi, lo))
	return d/2 + rand.N(d/2+1)
}

func (r *Runner) logger() *slog.Logger {
	if r.follower.Logger != nil {
		return r.follower.Logger
	}
	return slog.Default()
}
