package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/internal/sleep"
)

// Defaults of a Runner.
const (
	DefaultPollInterval = time.Second      // RunDeadlines' wait between scans
	DefaultClaimHold    = 30 * time.Second // how long a claimed deadline is left to its runner
	DefaultMaxAttempts  = 100              // deliveries retried after a conflict
)

// Runner executes a saga: it delivers events and deadlines to instances
// kept in a Store and dispatches their commands.
type Runner[S any] struct {
	saga     *Saga[S]
	store    Store
	dispatch Dispatcher
	cfg      config
	wake     chan struct{}
}

type config struct {
	clock       func() time.Time
	logger      *slog.Logger
	poll, hold  time.Duration
	maxAttempts int
	middleware  []bus.Middleware // around Follow's events (instrument.go)
	deadlines   DeadlineObserver // around fired deadlines (instrument.go)
}

// Option configures a Runner.
type Option func(*config)

// WithClock sets the clock of deadlines (default time.Now), for tests.
func WithClock(now func() time.Time) Option { return func(c *config) { c.clock = now } }

// WithLogger sets where failed deadlines are logged (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithPollInterval sets how often RunDeadlines looks for due deadlines
// (0: DefaultPollInterval). A deadline scheduled by this runner wakes it
// at once whatever this is.
func WithPollInterval(d time.Duration) Option { return func(c *config) { c.poll = d } }

// WithClaimHold sets how long a claimed deadline is left to the runner that
// claimed it before another may fire it (a runner that died with it; 0:
// DefaultClaimHold).
func WithClaimHold(d time.Duration) Option { return func(c *config) { c.hold = d } }

// NewRunner returns a runner of s on store, dispatching commands to d.
func NewRunner[S any](s *Saga[S], store Store, d Dispatcher, opts ...Option) *Runner[S] {
	c := config{clock: time.Now, logger: slog.Default(), poll: DefaultPollInterval,
		hold: DefaultClaimHold, maxAttempts: DefaultMaxAttempts}
	for _, o := range opts {
		o(&c)
	}
	// 0 or less would spin RunDeadlines, or let every runner take every
	// claim at once: the defaults instead.
	if c.poll <= 0 {
		c.poll = DefaultPollInterval
	}
	if c.hold <= 0 {
		c.hold = DefaultClaimHold
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return &Runner[S]{saga: s, store: store, dispatch: d, cfg: c, wake: make(chan struct{}, 1)}
}

// HandlerName is the name of the saga's bus subscription: stable across
// processes and deploys, so retries and dead letters find it.
func (r *Runner[S]) HandlerName() string { return "saga:" + r.saga.name }

// Subscribe subscribes the runner to every type its saga handles on b, as
// one subscription named HandlerName.
func Subscribe[S any](b bus.Bus, r *Runner[S], opts ...bus.SubscribeOption) (bus.Subscription, error) {
	opts = append([]bus.SubscribeOption{bus.WithName(r.HandlerName())}, opts...)
	types := r.saga.EventTypes()
	if len(types) == 0 {
		return nil, fmt.Errorf("%w: saga %s handles no events", bus.ErrInvalidSubscription, r.saga.name)
	}
	if m, ok := b.(bus.MultiTypeSubscriber); ok {
		return m.SubscribeTypes(types, bus.HandlerFunc(r.Handle), opts...)
	}
	return nil, fmt.Errorf("%w: %T cannot subscribe one handler to several types", bus.ErrInvalidSubscription, b)
}

// Follow feeds the runner from the store through f (its Name is the
// checkpoint's) until ctx ends; see eventstore.Follower.Follow. A failure
// is retried with f's backoff, except a permanent one (bus.ErrPermanent:
// an event that maps to no instance, a state that no longer decodes): that
// event is logged at error level and skipped, as a bus dead-letters it,
// since retrying it would stop the saga for good. It stays in the store;
// resetting f's checkpoint delivers it again (redeliveries of the others
// have no effect).
func (r *Runner[S]) Follow(ctx context.Context, f *eventstore.Follower, interval time.Duration) error {
	h := r.followHandler()
	return f.Follow(ctx, interval, func(ctx context.Context, env eventsource.Envelope) error {
		err := h.Handle(ctx, env)
		if errors.Is(err, bus.ErrPermanent) {
			r.cfg.logger.ErrorContext(ctx, "saga: event skipped, it cannot be handled", "saga", r.saga.name,
				"event_type", env.Type, "event_id", env.ID.String(), "position", env.Position, "error", err)
			return nil
		}
		return err
	})
}

// Handle delivers one event: a bus.Handler and a Follower's function. An
// event of a type the saga does not handle, or for an instance that does
// not exist and that it does not start, or that ended, is ignored.
func (r *Runner[S]) Handle(ctx context.Context, env eventsource.Envelope) error {
	h, ok := r.saga.handlers[env.Type]
	if !ok {
		return nil
	}
	// The same event would panic every time: permanent, as below
	// (dead-lettered on a bus, skipped by Follow).
	id, err := safely(func() string { return fmt.Sprintf("association of %s %s", env.Type, env.ID) },
		func() (string, error) { return h.associate(env) })
	if err != nil {
		return bus.Permanent(fmt.Errorf("saga %s: %w", r.saga.name, err))
	}
	if id == "" {
		return bus.Permanent(fmt.Errorf("saga %s: %s %s maps to no instance", r.saga.name, env.Type, env.ID))
	}
	return r.deliver(ctx, id, env.ID.String(), h.starts, func(ctx context.Context, inst *Instance, sc *Scope[S]) error {
		sc.trigger = env
		if inst.Version == 0 {
			inst.CorrelationID = correlationOf(env)
			inst.TenantID = env.Metadata.TenantID
		}
		if err := h.handle(ctx, sc, env); err != nil {
			return err
		}
		if h.ends {
			sc.ended = true
		}
		return nil
	}, func(*Instance) PendingCommand {
		return PendingCommand{CorrelationID: correlationOf(env), CausationID: env.ID.String(),
			TenantID: env.Metadata.TenantID, TraceParent: env.Metadata.TraceParent, TraceState: env.Metadata.TraceState}
	})
}

func correlationOf(env eventsource.Envelope) string {
	if env.Metadata.CorrelationID != "" {
		return env.Metadata.CorrelationID
	}
	return env.ID.String()
}

// errSkip: the delivery has nothing to do (a deadline already gone).
var errSkip = errors.New("skip")

// deliver applies one delivery to instance id: load, run, save with the
// version check (reloading and running again after a conflict), then
// dispatch the outbox.
func (r *Runner[S]) deliver(ctx context.Context, id, deliveryID string, starts bool,
	run func(context.Context, *Instance, *Scope[S]) error, meta func(*Instance) PendingCommand) error {
	for attempt := 1; ; attempt++ {
		inst, err := r.store.Load(ctx, r.saga.name, id)
		if err != nil {
			return err
		}
		switch {
		case slices.Contains(inst.Processed, deliveryID):
			// A redelivery: its effects are recorded; finish what a
			// crash or a failed dispatch left undispatched, also when
			// the delivery ended the instance.
			return r.redispatch(ctx, inst, deliveryID)
		case inst.Version == 0 && !starts, inst.Ended:
			return nil
		}
		var state S
		if len(inst.State) > 0 {
			if err := json.Unmarshal(inst.State, &state); err != nil {
				return bus.Permanent(fmt.Errorf("saga %s: decode state of %s: %w", r.saga.name, id, err))
			}
		}
		sc := &Scope[S]{State: &state, id: id, now: r.cfg.clock()}
		_, err = safely(func() string { return fmt.Sprintf("saga %s: handler of %s", r.saga.name, inst.ID) },
			func() (struct{}, error) { return struct{}{}, run(ctx, &inst, sc) })
		if errors.Is(err, errSkip) {
			return nil
		} else if err != nil {
			return err
		}
		if err := r.apply(&inst, sc, deliveryID, meta); err != nil {
			return err
		}
		err = r.store.Save(ctx, &inst)
		if errors.Is(err, ErrConflict) && attempt < r.cfg.maxAttempts {
			r.backoff(ctx, attempt)
			continue
		}
		if err != nil {
			return err
		}
		if len(sc.sched) > 0 {
			r.nudge()
		}
		var own []string
		for _, p := range inst.Outbox {
			if p.Delivery == deliveryID {
				own = append(own, p.ID)
			}
		}
		if len(own) == 0 {
			return nil
		}
		return r.dispatchClaimed(ctx, inst, own)
	}
}

// safely runs fn, turning a panic in the user's code it calls (a mapping,
// a handler, a Dispatcher) into an error saying what panicked, wrapping
// the panic value when it is an error. RunDeadlines and Follow have no bus
// to recover a panic, and a deadline whose handler panicked would take
// every runner's process down in turn.
func safely[T any](what func() string, fn func() (T, error)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			var zero T
			v = zero
			if perr, ok := p.(error); ok {
				err = fmt.Errorf("%s panicked: %w", what(), perr)
			} else {
				err = fmt.Errorf("%s panicked: %v", what(), p)
			}
		}
	}()
	return fn()
}

// apply records a handler's effects on inst.
func (r *Runner[S]) apply(inst *Instance, sc *Scope[S], deliveryID string, meta func(*Instance) PendingCommand) error {
	state, err := json.Marshal(sc.State)
	if err != nil {
		return fmt.Errorf("saga %s: encode state of %s: %w", r.saga.name, inst.ID, err)
	}
	inst.State = state
	inst.Processed = append(inst.Processed, deliveryID)
	if n := len(inst.Processed); n > MaxProcessed {
		inst.Processed = slices.Clone(inst.Processed[n-MaxProcessed:])
	}
	for i, c := range sc.cmds {
		data, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("saga %s: encode command %s: %w", r.saga.name, c.CommandType(), err)
		}
		p := meta(inst)
		p.ID = r.deterministicID(inst.ID, deliveryID, "command", strconv.Itoa(i))
		p.Type, p.Data = c.CommandType(), data
		// Claimed by this delivery in the same write: a concurrent
		// redelivery leaves it to us.
		p.Delivery, p.ClaimedUntil = deliveryID, sc.now.Add(r.cfg.hold)
		inst.Outbox = append(inst.Outbox, p)
	}
	for name, due := range sc.sched {
		inst.Deadlines = slices.DeleteFunc(inst.Deadlines, func(d Deadline) bool { return d.Name == name })
		if !due.IsZero() {
			inst.Deadlines = append(inst.Deadlines, Deadline{ID: r.deterministicID(inst.ID, deliveryID, "deadline", name),
				Saga: r.saga.name, Instance: inst.ID, Name: name, Due: due.UTC()})
		}
	}
	slices.SortFunc(inst.Deadlines, func(a, b Deadline) int { return a.Due.Compare(b.Due) })
	if sc.ended {
		// On the runner's clock, as due times are: PurgeEnded's cutoff
		// is then on the clock the user controls (WithClock).
		inst.Ended, inst.EndedAt = true, sc.now
		inst.Deadlines = nil
	}
	return nil
}

var idSpace = uuid.MustParse("6f1c4a52-2c1e-4b8e-9a4e-5a6761676121")

// deterministicID names an effect by what caused it, so that repeating
// the delivery repeats the name.
func (r *Runner[S]) deterministicID(parts ...string) string {
	b := []byte(r.saga.name)
	for _, p := range parts {
		b = append(b, 0)
		b = append(b, p...)
	}
	return uuid.NewSHA1(idSpace, b).String()
}

// dispatchClaimed dispatches the commands ids of inst's outbox, which
// this runner has claimed, in order, then removes those that succeeded
// and releases the others in one write. A failure stops it: what is left
// is dispatched by a redelivery or by RunDeadlines.
func (r *Runner[S]) dispatchClaimed(ctx context.Context, inst Instance, ids []string) error {
	var done []string
	var failed error
	for _, cmd := range inst.Outbox {
		if !slices.Contains(ids, cmd.ID) {
			continue
		}
		// A panic is an error: the command is released like any failed one.
		_, err := safely(func() string { return "dispatcher" },
			func() (struct{}, error) { return struct{}{}, r.dispatch.Dispatch(ctx, cmd) })
		if err != nil {
			failed = fmt.Errorf("saga %s: dispatch %s %s: %w", r.saga.name, cmd.Type, cmd.ID, err)
			break
		}
		done = append(done, cmd.ID)
	}
	// Recorded even when ctx has ended (a bus closing): else what was
	// dispatched would be dispatched again once the claim expires, and
	// what failed would stay claimed, skipped by the event's redelivery.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outboxUpdateTimeout)
	defer cancel()
	err := r.update(uctx, inst, func(inst *Instance) bool {
		changed := false
		inst.Outbox = slices.DeleteFunc(slices.Clone(inst.Outbox), func(p PendingCommand) bool {
			changed = changed || slices.Contains(done, p.ID)
			return slices.Contains(done, p.ID)
		})
		for i := range inst.Outbox {
			if slices.Contains(ids, inst.Outbox[i].ID) {
				inst.Outbox[i].ClaimedUntil, changed = time.Time{}, true
			}
		}
		return changed
	})
	return errors.Join(failed, err)
}

// outboxUpdateTimeout bounds the write that records a dispatch's outcome,
// which does not inherit the delivery's ctx.
const outboxUpdateTimeout = 5 * time.Second

// update applies change to inst and saves it, reloading and applying it
// again after a conflict; change reports whether it changed anything.
func (r *Runner[S]) update(ctx context.Context, inst Instance, change func(*Instance) bool) error {
	for attempt := 1; ; attempt++ {
		if !change(&inst) {
			return nil
		}
		err := r.store.Save(ctx, &inst)
		if !errors.Is(err, ErrConflict) || attempt >= r.cfg.maxAttempts {
			return err
		}
		r.backoff(ctx, attempt)
		if inst, err = r.store.Load(ctx, inst.Saga, inst.ID); err != nil {
			return err
		}
	}
}

// redispatch dispatches the commands of inst's outbox that nobody holds
// (of delivery only, unless it is ""): it claims them in a write, so that
// a concurrent redelivery or sweep skips them, then dispatches them.
// Commands another runner holds are left to it, or to RunDeadlines if it
// dies.
func (r *Runner[S]) redispatch(ctx context.Context, inst Instance, delivery string) error {
	var ids []string
	for attempt := 1; ; attempt++ {
		now := r.cfg.clock()
		ids = ids[:0]
		for i, p := range inst.Outbox {
			if (delivery == "" || p.Delivery == delivery) && !p.ClaimedUntil.After(now) {
				inst.Outbox[i].ClaimedUntil = now.Add(r.cfg.hold)
				ids = append(ids, p.ID)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		err := r.store.Save(ctx, &inst)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrConflict) || attempt >= r.cfg.maxAttempts {
			return err
		}
		r.backoff(ctx, attempt)
		if inst, err = r.store.Load(ctx, inst.Saga, inst.ID); err != nil {
			return err
		}
	}
	return r.dispatchClaimed(ctx, inst, ids)
}

// backoff waits a little, randomly, before a retry after a conflict, so
// that deliveries contending for one instance do not retry in lockstep.
func (r *Runner[S]) backoff(ctx context.Context, attempt int) {
	d := time.Duration(min(attempt, 10)) * time.Millisecond
	sleep.For(ctx, time.Duration(rand.Int64N(int64(d)+1)))
}

// FireDue fires every deadline due now (on the runner's clock) and not
// claimed by another runner, and returns how many fired. RunDeadlines
// calls it in a loop; tests call it directly.
func (r *Runner[S]) FireDue(ctx context.Context) (int, error) {
	fired := 0
	for {
		due, err := r.store.ClaimDue(ctx, r.saga.name, r.cfg.clock(), r.cfg.hold, 100)
		if err != nil {
			return fired, err
		}
		var errs []error
		for _, d := range due {
			ok, err := r.observedFire(ctx, d)
			if err != nil {
				errs = append(errs, err)
			} else if ok {
				fired++
			}
		}
		if len(errs) > 0 || len(due) < 100 {
			return fired, errors.Join(errs...)
		}
	}
}

// fire delivers deadline d to its instance, if the instance still has it.
func (r *Runner[S]) fire(ctx context.Context, d Deadline) (bool, error) {
	if isOutboxRow(d) {
		inst, err := r.store.Load(ctx, r.saga.name, d.Instance)
		if err != nil {
			return false, err
		}
		return false, r.redispatch(ctx, inst, "")
	}
	fn, ok := r.saga.deadlines[d.Name]
	fired := false
	err := r.deliver(ctx, d.Instance, d.ID, false, func(ctx context.Context, inst *Instance, sc *Scope[S]) error {
		// An attempt after a conflict may find that another runner
		// fired it: only the committed attempt counts.
		fired = false
		i := slices.IndexFunc(inst.Deadlines, func(x Deadline) bool { return x.ID == d.ID })
		if i < 0 {
			return errSkip // fired or cancelled meanwhile
		}
		inst.Deadlines = slices.Delete(slices.Clone(inst.Deadlines), i, i+1)
		fired = true
		if !ok {
			r.cfg.logger.Warn("saga: deadline without a handler dropped", "saga", r.saga.name, "instance", d.Instance, "deadline", d.Name)
			return nil
		}
		return fn(ctx, sc, d)
	}, func(inst *Instance) PendingCommand {
		return PendingCommand{CorrelationID: inst.CorrelationID, TenantID: inst.TenantID, CausationID: d.ID}
	})
	return fired && err == nil, err
}

// RunDeadlines fires due deadlines until ctx ends, then returns nil. It
// scans every poll interval (WithPollInterval) and at once after this
// runner schedules a deadline. Failures are logged and retried once the
// claim expires (WithClaimHold). Run it in as many processes as you like.
func (r *Runner[S]) RunDeadlines(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.wake:
		}
		if _, err := r.FireDue(ctx); err != nil && ctx.Err() == nil {
			r.cfg.logger.Error("saga: firing deadlines", "saga", r.saga.name, "error", err)
		}
		t.Reset(r.cfg.poll)
	}
}

func (r *Runner[S]) nudge() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}
