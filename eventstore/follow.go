package eventstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/internal/sleep"
)

// Defaults of a Follower's backoff between failed passes.
const (
	DefaultRetryMin = 50 * time.Millisecond
	DefaultRetryMax = 5 * time.Second
)

// saveTimeout bounds a checkpoint save. Saves do not inherit the caller's
// cancellation (a stop must still record what was applied), so they need a
// bound of their own.
const saveTimeout = 5 * time.Second

// ErrCheckpointMoved matches a Follower error whose save found the
// checkpoint moved by someone else since this follower read or saved it
// (an operator's reset, the next holder of a lost lease). The follower
// saves nothing then, reads the checkpoint again and goes on from there.
var ErrCheckpointMoved = errors.New("eventstore: checkpoint moved by another writer")

// ErrCheckpointNotSaved matches a Follower error whose checkpoint could not
// be saved: the events applied since the last save are applied again by the
// next reader.
var ErrCheckpointNotSaved = errors.New("eventstore: checkpoint not saved")

// saveError marks a failed save with ErrCheckpointNotSaved and keeps the
// store's error reachable.
type saveError struct{ err error }

func (e *saveError) Error() string   { return e.err.Error() }
func (e *saveError) Unwrap() []error { return []error{ErrCheckpointNotSaved, e.err} }

// Follower reads a store's global order from a named checkpoint. Projection
// runners and the repository's outbox relay are both followers: they differ
// only in what they do with each event.
//
// A Follower must not be copied after first use (it keeps its status).
type Follower struct {
	Name        string // the checkpoint's name; unique per reader
	Store       Store
	Checkpoints CheckpointStore
	// SaveEvery saves the checkpoint after this many events (default 1).
	// A crash replays at most this many events: delivery is at-least-once.
	SaveEvery int
	// SaveInterval, when set, also saves the checkpoint once this long
	// passed since the last save, so that a slow fn does not leave many
	// minutes of work unsaved while SaveEvery is large. CatchUp and Follow
	// save at the end of every pass and at a stop in any case.
	SaveInterval time.Duration
	// RetryMin and RetryMax bound Follow's wait after a failed pass: it
	// doubles from RetryMin up to RetryMax, with jitter (defaults
	// DefaultRetryMin and DefaultRetryMax).
	RetryMin, RetryMax time.Duration
	// Logger receives each failure Follow retries (default slog.Default()).
	Logger *slog.Logger
	// BatchSize is how many events CatchUpBatches and FollowBatches hand
	// to fn at once (default DefaultBatchSize). The checkpoint is saved
	// after every batch, so a crash hands at most one batch again.
	BatchSize int
	// Lease, when set, makes Follow and FollowBatches run only while Owner
	// holds the lease named Name: at most one follower per name is active
	// across processes, the others wait in standby and one takes over
	// within about LeaseTTL when the holder dies.
	Lease Lease
	// LeaseTTL is how long a hold lasts without renewal (default
	// DefaultLeaseTTL). It bounds failover time; the holder renews it
	// every third of it.
	LeaseTTL time.Duration
	// Owner identifies this follower to the lease (default DefaultOwner()).
	Owner string
	// Raw, when Store implements RawReader, reads with ReadAllRaw: fn then
	// gets every Event as an eventsource.RawEvent, its payload not
	// decoded. It is for followers that only forward what was stored (the
	// outbox relay on a bus that encodes); with other stores it has no
	// effect.
	Raw bool

	mu     sync.Mutex
	status FollowerStatus
	wake   chan struct{} // Nudge's signal to Follow; capacity 1
	// marks are heads Nudge reported beyond Position, oldest first, with
	// when they were reported: Status's LagTime is the age of the first.
	marks []headMark
}

// headMark is a head position and when the follower learned of it.
type headMark struct {
	pos int64
	at  time.Time
}

// maxMarks bounds the marks kept; past it the newest mark is moved
// forward instead, which keeps the oldest (the one LagTime reads) exact.
const maxMarks = 256

// liveSlack is how far behind the head a live follower may fall during a
// pass and still say it is live rather than catching up.
const liveSlack = DefaultBatchSize

// DefaultBatchSize is a Follower's BatchSize when it is not set.
const DefaultBatchSize = 1000

// FollowerState says what a follower is doing.
type FollowerState string

// The states of a Follower.
const (
	StateStopped    FollowerState = "stopped"     // not running
	StateStandby    FollowerState = "standby"     // waiting for another owner's lease
	StateCatchingUp FollowerState = "catching_up" // reading and applying
	StateLive       FollowerState = "live"        // caught up, waiting for events
	StateRetrying   FollowerState = "retrying"    // a pass failed; waiting to retry
	// StateHalted is set by users of a Follower (the projection runner)
	// that stopped on an event they could not apply, until restarted.
	StateHalted FollowerState = "halted"
)

// FollowerStatus is what a Follower has done so far, for health checks and
// operators.
type FollowerStatus struct {
	// Position is the last position handed to fn and accepted (at start,
	// the checkpoint read).
	Position int64
	// Saved is the last position this Follower read or saved as its
	// checkpoint. Position > Saved means a save is pending.
	Saved int64
	// ConsecutiveFailures counts failed passes since the last good one; 0
	// means healthy.
	ConsecutiveFailures int
	// LastError is the most recent failure and LastFailure its time. They
	// are kept after a recovery, for diagnosis.
	LastError   error
	LastFailure time.Time
	// Head is the highest position this follower knows to be stored: what
	// its reads reached, or what Nudge reported. It may trail the store's
	// real head between passes.
	Head int64
	// State is what the follower is doing now.
	State FollowerState
	// LagTime is how long ago the follower learned of the oldest event it
	// has not applied yet (through Nudge or a store's append
	// notification); 0 when it is not behind. It is how stale what the
	// follower maintains may be.
	LagTime time.Duration
}

// Lag is how many known events the follower has still to apply.
func (s FollowerStatus) Lag() int64 { return max(s.Head-s.Position, 0) }

// Status returns the follower's current status. It is safe to call while
// CatchUp or Follow runs.
func (f *Follower) Status() FollowerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.status
	if st.State == "" {
		st.State = StateStopped
	}
	if st.Lag() > 0 && len(f.marks) > 0 {
		st.LagTime = time.Since(f.marks[0].at)
	}
	return st
}

// advance records that fn accepted the event at position p. f.mu is held.
func (f *Follower) advanceLocked(p int64) {
	s := &f.status
	s.Position, s.Head = p, max(s.Head, p)
	if len(f.marks) > 0 && f.marks[0].pos <= p {
		i := 0
		for i < len(f.marks) && f.marks[i].pos <= p {
			i++
		}
		f.marks = append(f.marks[:0], f.marks[i:]...)
	}
	if s.State == StateLive && s.Head-p > liveSlack {
		s.State = StateCatchingUp
	}
}

func (f *Follower) advance(p int64) {
	f.mu.Lock()
	f.advanceLocked(p)
	f.mu.Unlock()
}

// startPass reads the checkpoint a pass starts from and records it. It
// also asks a store that can say (HeadReader) where its head is, so that
// Status counts the whole backlog from the start: reads alone learn it page
// by page. A pass that a notification started knows a head past its
// position already, so a live follower pays no query per append; and it is
// not Nudge, since the pass about to run reads up to that head anyway.
func (f *Follower) startPass(ctx context.Context) (int64, error) {
	from, err := f.Checkpoints.Checkpoint(ctx, f.Name)
	if err != nil {
		err = fmt.Errorf("eventstore: follower %q: read checkpoint: %w", f.Name, err)
		f.finish(ctx, err)
		return 0, err
	}
	f.mu.Lock()
	f.status.Position, f.status.Saved = from, from
	headKnown := f.status.Head > from
	f.mu.Unlock()
	if hr, ok := f.Store.(HeadReader); ok && !headKnown {
		if head, err := hr.Head(ctx); err == nil && head > 0 { // a failure is left to the pass's read
			f.mu.Lock()
			f.noteHeadLocked(head)
			f.mu.Unlock()
		}
	}
	return from, nil
}

// Nudge tells a running Follow or FollowBatches that events up to position
// head were stored (0 if unknown), so that it starts a pass now instead of
// at its next poll. It never blocks; nudges during a pass are coalesced
// into one more pass.
func (f *Follower) Nudge(head int64) {
	f.mu.Lock()
	f.noteHeadLocked(head)
	w := f.wakeLocked()
	f.mu.Unlock()
	select {
	case w <- struct{}{}:
	default:
	}
}

// noteHeadLocked records that events up to head are stored. f.mu is held.
func (f *Follower) noteHeadLocked(head int64) {
	if head > f.status.Head && head > f.status.Position {
		if n := len(f.marks); n < maxMarks {
			f.marks = append(f.marks, headMark{head, time.Now()})
		} else {
			f.marks[n-1].pos = head
		}
	}
	f.status.Head = max(f.status.Head, head)
}

func (f *Follower) wakeLocked() chan struct{} {
	if f.wake == nil {
		f.wake = make(chan struct{}, 1)
	}
	return f.wake
}

func (f *Follower) wakeups() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wakeLocked()
}

func (f *Follower) setState(st FollowerState) {
	f.update(func(s *FollowerStatus) { s.State = st })
}

// CatchUp hands every event after the checkpoint to fn, in position order,
// then saves the checkpoint. It stops at the first error from fn, saving
// the position of the last event fn accepted, so the failed event is read
// again next time. It returns how many events fn accepted.
//
// When ctx ends, CatchUp takes no further event and returns an error
// matching ctx.Err(), but still saves the position of what fn accepted
// (saves are bounded by a few seconds instead), so a stop never makes the
// next reader apply an event twice. An error matching
// ErrCheckpointNotSaved means that save failed.
func (f *Follower) CatchUp(ctx context.Context, fn func(context.Context, eventsource.Envelope) error) (int, error) {
	done, _, err := f.catchUp(ctx, fn)
	return done, err
}

// catchUp is one pass from the saved checkpoint. unsaved is the position fn
// reached when saving it failed, else 0.
func (f *Follower) catchUp(ctx context.Context, fn func(context.Context, eventsource.Envelope) error) (done int, unsaved int64, err error) {
	from, err := f.startPass(ctx)
	if err != nil {
		return 0, 0, err
	}
	every := max(f.SaveEvery, 1)
	last, saved := from, from
	// SaveInterval is watched with a timer rather than by reading the
	// clock after every event, which costs more than a cheap fn's event.
	var intervalDue <-chan time.Time
	var interval *time.Timer
	if f.SaveInterval > 0 {
		interval = time.NewTimer(f.SaveInterval)
		defer interval.Stop()
		intervalDue = interval.C
	}
	save := func() error {
		if interval != nil {
			interval.Reset(f.SaveInterval)
		}
		if last == saved {
			return nil
		}
		if err := f.save(ctx, last); err != nil {
			return err
		}
		saved = last
		return nil
	}
	for env, rerr := range f.read(ctx, from+1) {
		if rerr != nil {
			err = fmt.Errorf("eventstore: follower %q: read after %d: %w", f.Name, last, rerr)
			break
		}
		if ferr := fn(ctx, env); ferr != nil {
			err = fmt.Errorf("eventstore: follower %q: event at position %d: %w", f.Name, env.Position, ferr)
			break
		}
		done++
		last = env.Position
		f.advance(last)
		// fn finished this event although ctx ended: stop here, and let
		// the save below record it.
		if cerr := ctx.Err(); cerr != nil {
			err = fmt.Errorf("eventstore: follower %q: stopped after position %d: %w", f.Name, last, cerr)
			break
		}
		due := done%every == 0
		select {
		case <-intervalDue: // nil without SaveInterval: never ready
			due = true
		default:
		}
		if due {
			if err = save(); err != nil {
				break
			}
		}
	}
	if !errors.Is(err, ErrCheckpointNotSaved) {
		err = joinSave(err, save())
	}
	if last != saved && !errors.Is(err, ErrCheckpointMoved) { // a moved checkpoint is not ours to save
		unsaved = last
	}
	f.finish(ctx, err)
	return done, unsaved, err
}

// read reads the global order from position from, raw when asked and
// possible.
func (f *Follower) read(ctx context.Context, from int64) iter.Seq2[eventsource.Envelope, error] {
	if r, ok := f.Store.(RawReader); ok && f.Raw {
		return r.ReadAllRaw(ctx, from)
	}
	return f.Store.ReadAll(ctx, from)
}

// save records position p. It runs without ctx's cancellation: what fn
// applied must be recorded even when the reader is stopping, or the next
// one applies it again. A holder that lost its lease saves nothing: the
// next holder may have saved a later position already, which this save
// would move back; the events since the last save are applied again
// instead, at least once as promised.
func (f *Follower) save(ctx context.Context, p int64) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrLeaseLost) {
		return fmt.Errorf("eventstore: follower %q: checkpoint %d not saved: %w", f.Name, p, &saveError{cause})
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	var err error
	if sw, ok := f.Checkpoints.(CheckpointSwapper); ok {
		var swapped bool
		if swapped, err = sw.SwapCheckpoint(ctx, f.Name, f.Status().Saved, p); err == nil && !swapped {
			err = ErrCheckpointMoved
		}
	} else {
		err = f.Checkpoints.SaveCheckpoint(ctx, f.Name, p)
	}
	if err != nil {
		return fmt.Errorf("eventstore: follower %q: save checkpoint %d: %w", f.Name, p, &saveError{err})
	}
	f.update(func(s *FollowerStatus) { s.Saved = p })
	return nil
}

func joinSave(err, saveErr error) error {
	switch {
	case saveErr == nil:
		return err
	case err == nil:
		return saveErr
	}
	return fmt.Errorf("%w (and %w)", err, saveErr)
}

func (f *Follower) update(change func(*FollowerStatus)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(&f.status)
}

// finish records how a pass ended. A pass cut short by its own ctx is a
// stop, not a failure, unless what it applied could not be saved.
func (f *Follower) finish(ctx context.Context, err error) {
	f.update(func(s *FollowerStatus) {
		switch {
		case err == nil:
			s.ConsecutiveFailures = 0
		case ctx.Err() != nil && !errors.Is(err, ErrCheckpointNotSaved):
		default:
			s.ConsecutiveFailures++
			s.LastError, s.LastFailure = err, time.Now()
		}
	})
}

// Reset moves the checkpoint back to the start, so the next CatchUp reads
// everything again.
func (f *Follower) Reset(ctx context.Context) error {
	return f.Checkpoints.SaveCheckpoint(ctx, f.Name, 0)
}

// DefaultPollInterval is how often Follow and FollowBatches poll when
// given no interval and nothing nudges them sooner.
const DefaultPollInterval = time.Second

// Follow calls CatchUp, then again every interval (0: DefaultPollInterval)
// or as soon as Nudge is called, until ctx ends. A failed pass is logged and retried after a
// backoff (see RetryMin): a failure delays the follower but never stops
// it. When ctx ends, Follow saves the position of what fn applied and
// returns nil, or an error matching ErrCheckpointNotSaved if that save
// failed (those events would be applied again). With a Lease, passes run
// only while this follower holds it.
func (f *Follower) Follow(ctx context.Context, interval time.Duration, fn func(context.Context, eventsource.Envelope) error) error {
	return f.run(ctx, interval, func(ctx context.Context) (int64, error) {
		_, unsaved, err := f.catchUp(ctx, fn)
		return unsaved, err
	})
}

// CatchUpBatches is CatchUp with fn taking up to BatchSize events at once,
// in position order, and the checkpoint saved after each batch fn accepts.
// A batch fn fails is handed again whole by the next pass. While fn runs,
// the next batch is read, so a follower whose fn is a network round trip
// (the outbox relay) is not slowed down by the store's reads.
func (f *Follower) CatchUpBatches(ctx context.Context, fn func(context.Context, []eventsource.Envelope) error) (int, error) {
	done, _, err := f.catchUpBatches(ctx, fn)
	return done, err
}

// FollowBatches is Follow with fn taking batches, as in CatchUpBatches.
func (f *Follower) FollowBatches(ctx context.Context, interval time.Duration, fn func(context.Context, []eventsource.Envelope) error) error {
	return f.run(ctx, interval, func(ctx context.Context) (int64, error) {
		_, unsaved, err := f.catchUpBatches(ctx, fn)
		return unsaved, err
	})
}

// readBatch is what catchUpBatches's reader hands on: events, then possibly
// the error that ended the read.
type readBatch struct {
	envs []eventsource.Envelope
	err  error
}

func (f *Follower) catchUpBatches(ctx context.Context, fn func(context.Context, []eventsource.Envelope) error) (done int, unsaved int64, err error) {
	from, err := f.startPass(ctx)
	if err != nil {
		return 0, 0, err
	}
	size := f.BatchSize
	if size <= 0 {
		size = DefaultBatchSize
	}

	// The reader runs one batch ahead of fn.
	rctx, cancel := context.WithCancel(ctx)
	batches := make(chan readBatch, 1)
	go func() {
		defer close(batches)
		send := func(b readBatch) bool {
			select {
			case batches <- b:
				return true
			case <-rctx.Done():
				return false
			}
		}
		batch := make([]eventsource.Envelope, 0, size)
		for env, rerr := range f.read(rctx, from+1) {
			if rerr != nil {
				send(readBatch{envs: batch, err: rerr})
				return
			}
			batch = append(batch, env)
			if len(batch) == size {
				if !send(readBatch{envs: batch}) {
					return
				}
				batch = make([]eventsource.Envelope, 0, size)
			}
		}
		if len(batch) > 0 {
			send(readBatch{envs: batch})
		}
	}()
	defer func() {
		cancel()
		for range batches { // let the reader finish
		}
	}()

	last := from
	for b := range batches {
		if len(b.envs) > 0 {
			// A stop takes no further batch.
			if cerr := ctx.Err(); cerr != nil {
				err = fmt.Errorf("eventstore: follower %q: stopped after position %d: %w", f.Name, last, cerr)
				break
			}
			first, end := b.envs[0].Position, b.envs[len(b.envs)-1].Position
			if ferr := fn(ctx, b.envs); ferr != nil {
				err = fmt.Errorf("eventstore: follower %q: batch at positions %d-%d: %w", f.Name, first, end, ferr)
				break
			}
			done += len(b.envs)
			last = end
			f.advance(last)
			if err = f.save(ctx, last); err != nil {
				if !errors.Is(err, ErrCheckpointMoved) {
					unsaved = last
				}
				break
			}
		}
		if b.err != nil {
			err = fmt.Errorf("eventstore: follower %q: read after %d: %w", f.Name, last, b.err)
			break
		}
	}
	f.finish(ctx, err)
	return done, unsaved, err
}

// run is the loop of Follow and FollowBatches: with a Lease, it waits in
// standby until it holds the lease, then follows until it loses it.
func (f *Follower) run(ctx context.Context, interval time.Duration, pass func(context.Context) (int64, error)) error {
	defer f.setState(StateStopped)
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	// A store that announces its appends wakes the follower at once;
	// the interval is then only the fallback.
	if n, ok := f.Store.(Notifier); ok {
		stop := n.OnAppend(f.Nudge)
		defer stop()
	}
	if f.Lease == nil {
		return f.follow(ctx, interval, pass)
	}
	ttl := f.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	owner := f.Owner
	if owner == "" {
		owner = DefaultOwner()
	}
	// A standby follower retries the lease a few times per TTL, so that it
	// takes over soon after a dead holder's hold expires.
	poll := min(ttl/4, max(interval, 10*time.Millisecond))
	for {
		f.setState(StateStandby)
		h, err := AcquireLease(ctx, f.Lease, f.Name, owner, ttl)
		switch {
		case ctx.Err() != nil:
			if h != nil {
				h.Release() // acquired as ctx ended: hand it over now, not after the TTL
			}
			return nil
		case err != nil:
			f.finish(ctx, err)
			f.logger().WarnContext(ctx, "follower cannot reach its lease, retrying", "follower", f.Name, "error", err)
		case h != nil:
			err = f.follow(h.Context(), interval, pass)
			h.Release()
			if ctx.Err() != nil {
				return err
			}
			f.logger().WarnContext(ctx, "follower lost its lease, standing by", "follower", f.Name, "owner", owner,
				"cause", context.Cause(h.Context()))
			continue // try again at once: the hold may be ours again
		}
		if !sleep.For(ctx, poll) {
			return nil
		}
	}
}

// follow runs passes until ctx ends.
func (f *Follower) follow(ctx context.Context, interval time.Duration, pass func(context.Context) (int64, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	wake := f.wakeups()
	// pending is a position fn applied but a save failed to record. It is
	// saved before the next pass, which would otherwise apply it again.
	var pending int64
	for {
		// A live follower woken for a few new events stays live;
		// advance says catching up if it falls far behind.
		f.update(func(s *FollowerStatus) {
			if s.State != StateLive || s.Lag() > liveSlack {
				s.State = StateCatchingUp
			}
		})
		err := f.retrySave(ctx, pending)
		if err == nil {
			pending = 0
			pending, err = pass(ctx)
		}
		if ctx.Err() != nil {
			// The pass saved with a detached context already; only a
			// failed save is news.
			if errors.Is(err, ErrCheckpointNotSaved) {
				return err
			}
			return nil
		}
		if err != nil {
			f.setState(StateRetrying)
			st := f.Status()
			d := f.backoff(st.ConsecutiveFailures)
			f.logger().WarnContext(ctx, "follower failed, retrying",
				"follower", f.Name, "position", st.Position, "failures", st.ConsecutiveFailures, "retry_in", d, "error", err)
			if !sleep.For(ctx, d) {
				return f.retrySave(ctx, pending)
			}
			continue
		}
		f.setState(StateLive)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-wake:
		}
	}
}

// retrySave saves a pending position, if there is one.
func (f *Follower) retrySave(ctx context.Context, pending int64) error {
	if pending == 0 {
		return nil
	}
	err := f.save(ctx, pending)
	if errors.Is(err, ErrCheckpointMoved) {
		return nil // not ours to save any more: the next pass reads it again
	}
	if err != nil {
		f.finish(ctx, err) // a success is not a good pass yet: the backoff goes on growing
	}
	return err
}

// backoff returns the wait after the given number of consecutive failures:
// doubling from RetryMin, capped at RetryMax, drawn from its upper half so
// that followers which failed together (a database restart) do not retry
// in lockstep.
func (f *Follower) backoff(failures int) time.Duration {
	lo, hi := f.RetryMin, f.RetryMax
	if lo <= 0 {
		lo = DefaultRetryMin
	}
	if hi <= 0 {
		hi = DefaultRetryMax
	}
	hi = max(hi, lo)
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

func (f *Follower) logger() *slog.Logger {
	if f.Logger != nil {
		return f.Logger
	}
	return slog.Default()
}
