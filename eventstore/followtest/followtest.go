// Package followtest is the suite that eventstore.Follower passes on every
// store: it checks the follower invariants of the design against a real
// Store and CheckpointStore, since what breaks them (a save with a
// cancelled context, a failing database) depends on the store.
//
//	func TestFollower(t *testing.T) {
//		followtest.Run(t, func(t *testing.T) (eventstore.Store, eventstore.CheckpointStore) {
//			s := newStore(t)
//			return s, s
//		})
//	}
//
// Stores that decode payloads must know storetest's event types
// (storetest.NewRegistry). The store may be shared between subtests: each
// subtest writes a fresh stream, uses a fresh checkpoint name and starts its
// checkpoint just before its own events.
package followtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/storetest"
)

// deadline bounds every wait, so that a follower that hangs fails the test
// instead of the run.
const deadline = 30 * time.Second

// Run runs the follower suite. open is called once per subtest; it may
// return fresh stores or shared ones, and closes what it opens (t.Cleanup).
func Run(t *testing.T, open func(t *testing.T) (eventstore.Store, eventstore.CheckpointStore)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore)
	}{
		{"GracefulStopSavesApplied", func(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
			testGracefulStop(t, s, c, 1)
		}},
		{"GracefulStopSavesAppliedBatch", func(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
			testGracefulStop(t, s, c, 100)
		}},
		{"CatchUpCancelledSavesApplied", testCatchUpCancelled},
		{"StopReportsFailedSave", testStopReportsFailedSave},
		{"HandlerFailureRetries", testHandlerFailureRetries},
		{"SaveFailureRetries", testSaveFailureRetries},
		{"StopDuringBackoff", testStopDuringBackoff},
		{"StopDuringBackoffSavesPending", testStopDuringBackoffSavesPending},
		{"StopWhileIdle", testStopWhileIdle},
		{"WakesOnAppend", testWakesOnAppend},
		{"SaveInterval", testSaveInterval},
		{"Raw", testRaw},
		{"ResetWhileRunningIsKept", testResetWhileRunning},
		{"StatusCountsTheBacklog", testStatusCountsTheBacklog},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, c := open(t)
			tc.fn(t, s, c)
		})
	}
}

// A handler that is running when the follower is stopped finishes its
// event; the stop must then save that event's position, or a restart
// applies it twice (a read model double counts).
func testGracefulStop(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore, saveEvery int) {
	events := appendEvents(t, s, 3)
	f := newFollower(t, c, s, events[0])
	f.SaveEvery = saveEvery
	rec := newRecorder(events)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	entered := make(chan struct{})
	done := follow(ctx, f, func(ctx context.Context, env eventsource.Envelope) error {
		if env.ID == events[1].ID {
			close(entered)
			<-ctx.Done() // the stop arrives while this event is being applied
		}
		rec.record(env)
		return nil
	})
	wait(t, "the handler to start on the second event", entered)
	cancel()
	if err := stopped(t, done); err != nil {
		t.Fatalf("Follow after a graceful stop = %v, want nil", err)
	}
	wantCheckpoint(t, c, f.Name, events[1].Position)

	// The restart goes on with the third event, and applies nothing twice.
	ctx2, cancel2 := context.WithCancel(t.Context())
	defer cancel2()
	done = follow(ctx2, f, func(_ context.Context, env eventsource.Envelope) error {
		rec.record(env)
		return nil
	})
	waitFor(t, "the third event after the restart", func() bool { return rec.count(events[2].ID) > 0 })
	cancel2()
	if err := stopped(t, done); err != nil {
		t.Fatalf("Follow after the restart = %v, want nil", err)
	}
	rec.wantEachOnce(t)
	wantCheckpoint(t, c, f.Name, events[2].Position)
}

// An operator resets the checkpoint (a rebuild) while the follower is
// applying an event. The follower's next save must not write over the
// reset: it reads the checkpoint again and applies everything from there.
// On a store without CheckpointSwapper the reset would be lost.
func testResetWhileRunning(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	if _, ok := c.(eventstore.CheckpointSwapper); !ok {
		t.Skipf("%T does not implement eventstore.CheckpointSwapper", c)
	}
	events := appendEvents(t, s, 3)
	f := newFollower(t, c, s, events[0])
	rec := newRecorder(events)
	entered, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := follow(ctx, f, func(_ context.Context, env eventsource.Envelope) error {
		if env.ID == events[1].ID {
			once.Do(func() {
				close(entered)
				<-proceed // the reset happens while this event is applied
			})
		}
		rec.record(env)
		return nil
	})
	wait(t, "the handler to start on the second event", entered)
	wantCheckpoint(t, c, f.Name, events[0].Position)
	rctx, rcancel := context.WithTimeout(t.Context(), deadline)
	defer rcancel()
	if err := c.SaveCheckpoint(rctx, f.Name, events[0].Position-1); err != nil {
		t.Fatal(err)
	}
	close(proceed)
	waitRunning(t, "every event applied again after the reset", done, func() bool {
		return rec.count(events[0].ID) == 2 && rec.count(events[2].ID) >= 1
	})
	waitFor(t, "the checkpoint at the last event", func() bool {
		p, err := c.Checkpoint(rctx, f.Name)
		return err == nil && p == events[2].Position
	})
	cancel()
	if err := stopped(t, done); err != nil {
		t.Fatalf("Follow = %v, want nil", err)
	}
}

// CatchUp, the single pass, saves what it applied when its context ends
// during a handler, and reports the cancellation.
func testCatchUpCancelled(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	events := appendEvents(t, s, 3)
	f := newFollower(t, c, s, events[0])
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n, err := f.CatchUp(ctx, func(_ context.Context, env eventsource.Envelope) error {
		if env.ID == events[0].ID {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("CatchUp cancelled in a handler = %d, %v; want an error matching context.Canceled", n, err)
	}
	if n != 1 {
		t.Fatalf("CatchUp cancelled in the first handler accepted %d events, want 1", n)
	}
	wantCheckpoint(t, c, f.Name, events[0].Position)
}

// A stop whose final save fails must say so: the applied event will be
// applied again, and the caller has to know.
func testStopReportsFailedSave(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	events := appendEvents(t, s, 2)
	broken := &flakyCheckpoints{CheckpointStore: c}
	f := newFollower(t, broken, s, events[0])

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	entered := make(chan struct{})
	done := follow(ctx, f, func(ctx context.Context, env eventsource.Envelope) error {
		if env.ID == events[0].ID {
			close(entered)
			<-ctx.Done()
		}
		return nil
	})
	wait(t, "the handler to start", entered)
	broken.failSaves(-1)
	cancel()
	err := stopped(t, done)
	if !errors.Is(err, errCheckpointsDown) {
		t.Fatalf("Follow whose final save failed = %v, want an error matching %q", err, errCheckpointsDown)
	}
}

// A failing handler is retried with backoff; the follower keeps going,
// applies every event in order and never stops for good.
func testHandlerFailureRetries(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	const failures = 3
	events := appendEvents(t, s, 3)
	f := newFollower(t, c, s, events[0])
	f.RetryMin, f.RetryMax = time.Millisecond, 10*time.Millisecond
	logs := &logRecorder{}
	f.Logger = slog.New(logs)
	rec := newRecorder(events)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var mu sync.Mutex
	attempts := 0
	done := follow(ctx, f, func(_ context.Context, env eventsource.Envelope) error {
		if env.ID == events[1].ID {
			mu.Lock()
			attempts++
			n := attempts
			mu.Unlock()
			if n <= failures {
				return fmt.Errorf("transient failure %d", n)
			}
		}
		rec.record(env)
		return nil
	})
	waitRunning(t, "every event after the failures", done, func() bool { return rec.count(events[2].ID) > 0 })

	// Still following: later events are applied too.
	more := appendEvents(t, s, 2)
	rec.expect(more...)
	waitRunning(t, "events appended after the recovery", done, func() bool { return rec.count(more[1].ID) > 0 })
	cancel()
	if err := stopped(t, done); err != nil {
		t.Fatalf("Follow after recovering = %v, want nil", err)
	}
	rec.wantEachOnce(t)
	rec.wantInOrder(t)
	mu.Lock()
	defer mu.Unlock()
	if attempts != failures+1 {
		t.Errorf("the failing event was attempted %d times, want %d", attempts, failures+1)
	}
	if n := logs.warnings(); n != failures {
		t.Errorf("%d failures logged as warnings, want %d", n, failures)
	}
	st := f.Status()
	if st.ConsecutiveFailures != 0 || st.LastError == nil || st.LastFailure.IsZero() ||
		st.Position != more[1].Position || st.Saved != more[1].Position {
		t.Errorf("status after recovering = %+v; want no consecutive failures, the last error kept, position and saved %d",
			st, more[1].Position)
	}
}

// A checkpoint store that is down for a while delays the follower but
// does not stop it, and what was applied before is not applied again.
func testSaveFailureRetries(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	events := appendEvents(t, s, 3)
	broken := &flakyCheckpoints{CheckpointStore: c}
	f := newFollower(t, broken, s, events[0])
	f.RetryMin, f.RetryMax = time.Millisecond, 10*time.Millisecond
	logs := &logRecorder{}
	f.Logger = slog.New(logs)
	broken.failSaves(3)
	rec := newRecorder(events)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := follow(ctx, f, func(_ context.Context, env eventsource.Envelope) error {
		rec.record(env)
		return nil
	})
	waitRunning(t, "every event", done, func() bool { return rec.count(events[2].ID) > 0 })
	waitRunning(t, "the checkpoint to be saved", done, func() bool { return f.Status().Saved == events[2].Position })
	cancel()
	if err := stopped(t, done); err != nil {
		t.Fatalf("Follow after the checkpoint store recovered = %v, want nil", err)
	}
	rec.wantEachOnce(t)
	rec.wantInOrder(t)
	wantCheckpoint(t, c, f.Name, events[2].Position)
	if n := logs.warnings(); n != 3 {
		t.Errorf("%d failures logged as warnings, want 3", n)
	}
	if st := f.Status(); st.ConsecutiveFailures != 0 || !errors.Is(st.LastError, errCheckpointsDown) ||
		!errors.Is(st.LastError, eventstore.ErrCheckpointNotSaved) {
		t.Errorf("status after recovering = %+v; want no consecutive failures and the last error a failed save", st)
	}
}

// A follower waiting out a backoff stops as soon as its context ends.
func testStopDuringBackoff(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	events := appendEvents(t, s, 1)
	f := newFollower(t, c, s, events[0])
	f.RetryMin, f.RetryMax = time.Hour, time.Hour // only a stop ends this wait
	f.Logger = slog.New(&logRecorder{})
	errAlways := errors.New("always failing")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := follow(ctx, f, func(context.Context, eventsource.Envelope) error { return errAlways })
	waitRunning(t, "the failure in the status", done, func() bool { return f.Status().ConsecutiveFailures == 1 })
	if st := f.Status(); !errors.Is(st.LastError, errAlways) || st.Position != events[0].Position-1 {
		t.Errorf("status while failing = %+v; want the handler's error, position %d", st, events[0].Position-1)
	}
	cancel()
	if err := stopped(t, done); err != nil {
		t.Fatalf("Follow stopped during a backoff = %v, want nil", err)
	}
	wantCheckpoint(t, c, f.Name, events[0].Position-1)
}

// A follower waiting to retry a failed save, stopped, saves what it
// applied (and says so when it cannot).
func testStopDuringBackoffSavesPending(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	for _, recovered := range []bool{true, false} {
		events := appendEvents(t, s, 1)
		broken := &flakyCheckpoints{CheckpointStore: c}
		f := newFollower(t, broken, s, events[0])
		f.RetryMin, f.RetryMax = time.Hour, time.Hour
		f.Logger = slog.New(&logRecorder{})
		broken.failSaves(-1)
		rec := newRecorder(events)
		ctx, cancel := context.WithCancel(t.Context())
		done := follow(ctx, f, func(_ context.Context, env eventsource.Envelope) error {
			rec.record(env)
			return nil
		})
		waitRunning(t, "the failed save in the status", done, func() bool { return f.Status().ConsecutiveFailures == 1 })
		if recovered {
			broken.failSaves(0)
		}
		cancel()
		err := stopped(t, done)
		switch {
		case recovered && err != nil:
			t.Fatalf("Follow stopped with a save pending = %v, want nil", err)
		case !recovered && !errors.Is(err, eventstore.ErrCheckpointNotSaved):
			t.Fatalf("Follow stopped with a save pending that fails = %v, want an error matching ErrCheckpointNotSaved", err)
		}
		rec.wantEachOnce(t)
		if recovered {
			wantCheckpoint(t, c, f.Name, events[0].Position)
		}
	}
}

// A follower with nothing to do stops as soon as its context ends.
func testStopWhileIdle(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	events := appendEvents(t, s, 1)
	f := newFollower(t, c, s, events[0])
	rec := newRecorder(events)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := follow(ctx, f, func(_ context.Context, env eventsource.Envelope) error {
		rec.record(env)
		return nil
	})
	waitFor(t, "the event", func() bool { return rec.count(events[0].ID) > 0 })
	cancel()
	if err := stopped(t, done); err != nil {
		t.Fatalf("Follow stopped while idle = %v, want nil", err)
	}
	wantCheckpoint(t, c, f.Name, events[0].Position)
}

// A live follower on a store that announces appends (eventstore.Notifier)
// applies an appended event long before its poll, and reports the lag it
// learns of.
func testWakesOnAppend(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	if _, ok := s.(eventstore.Notifier); !ok {
		t.Skipf("%T does not announce appends", s)
	}
	events := appendEvents(t, s, 1)
	f := newFollower(t, c, s, events[0])
	rec := newRecorder(events)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- f.Follow(ctx, time.Hour, func(ctx context.Context, env eventsource.Envelope) error {
			if env.ID != events[0].ID {
				<-release // hold the second event, so the lag shows
			}
			rec.record(env)
			return nil
		})
	}()
	waitRunning(t, "the first event, then live", done, func() bool {
		return rec.count(events[0].ID) == 1 && f.Status().State == eventstore.StateLive
	})
	more := appendEvents(t, s, 2)
	rec.expect(more...)
	waitRunning(t, "the lag of the held event", done, func() bool {
		st := f.Status()
		return st.Head >= more[1].Position && st.Lag() >= 2 && st.LagTime > 0
	})
	close(release)
	waitRunning(t, "the appended events, without a poll", done, func() bool {
		return rec.count(more[1].ID) == 1
	})
	waitRunning(t, "no lag", done, func() bool {
		st := f.Status()
		return st.Position >= more[1].Position && st.LagTime == 0
	})
	cancel()
	if err := stopped(t, done); err != nil {
		t.Fatal(err)
	}
	rec.wantEachOnce(t)
}

// SaveInterval saves during a long pass, not only every SaveEvery events.
func testSaveInterval(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	events := appendEvents(t, s, 3)
	f := newFollower(t, c, s, events[0])
	f.SaveEvery, f.SaveInterval = 1000, time.Nanosecond
	reached := make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := follow(ctx, f, func(ctx context.Context, env eventsource.Envelope) error {
		if env.ID == events[2].ID {
			close(reached)
			<-ctx.Done() // finish during the stop, after the check below
		}
		return nil
	})
	wait(t, "the third event", reached)
	// The first two were saved by the interval, mid-pass.
	wantCheckpoint(t, c, f.Name, events[1].Position)
	cancel()
	if err := stopped(t, done); err != nil {
		t.Fatal(err)
	}
	wantCheckpoint(t, c, f.Name, events[2].Position)
}

// Helpers.

// pollInterval is the follower's interval in the suite: short, so that
// waits on a condition end quickly.
const pollInterval = 5 * time.Millisecond

// appendEvents appends n events to a fresh stream.
func appendEvents(t *testing.T, s eventstore.Store, n int) []eventsource.Envelope {
	t.Helper()
	id := uuid.NewString()
	envs := make([]eventsource.Envelope, n)
	for i := range envs {
		envs[i] = eventsource.NewEnvelope(storetest.Deposited{Amount: i + 1})
		envs[i].AggregateType, envs[i].AggregateID = "followtest", id
	}
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	stored, err := s.Append(ctx, eventsource.StreamID("followtest", id), eventstore.NoStream, envs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return stored
}

// newFollower returns a follower with a fresh name whose checkpoint is just
// before first, so that it reads no other subtest's events.
func newFollower(t *testing.T, c eventstore.CheckpointStore, s eventstore.Store, first eventsource.Envelope) *eventstore.Follower {
	t.Helper()
	f := &eventstore.Follower{Name: "followtest-" + uuid.NewString(), Store: s, Checkpoints: c}
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	if err := c.SaveCheckpoint(ctx, f.Name, first.Position-1); err != nil {
		t.Fatalf("SaveCheckpoint: %v", err)
	}
	return f
}

// follow runs f.Follow in a goroutine; the channel receives what it returns.
func follow(ctx context.Context, f *eventstore.Follower, fn func(context.Context, eventsource.Envelope) error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f.Follow(ctx, pollInterval, fn) }()
	return done
}

// stopped waits for Follow to return after its context was cancelled.
func stopped(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(deadline):
		t.Fatalf("Follow did not return within %v of its context ending", deadline)
		return nil
	}
}

// running fails if Follow has returned.
func running(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("Follow returned %v while its context lives; a follower must keep going", err)
	default:
	}
}

func wait(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(deadline):
		t.Fatalf("timed out after %v waiting for %s", deadline, what)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitRunning(t, what, nil, cond)
}

// waitRunning waits for cond, and fails at once if Follow returns (done
// may be nil).
func waitRunning(t *testing.T, what string, done <-chan error, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		running(t, done)
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", deadline, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func wantCheckpoint(t *testing.T, c eventstore.CheckpointStore, name string, want int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	got, err := c.Checkpoint(ctx, name)
	if err != nil {
		t.Fatalf("Checkpoint(%q): %v", name, err)
	}
	if got != want {
		t.Fatalf("checkpoint = %d, want %d (the last applied event)", got, want)
	}
}

// recorder counts what a follower applied, among the events it expects.
type recorder struct {
	mu     sync.Mutex
	want   []eventsource.Envelope
	counts map[uuid.UUID]int
	order  []int64 // positions, in the order they were applied
}

func newRecorder(events []eventsource.Envelope) *recorder {
	r := &recorder{counts: make(map[uuid.UUID]int)}
	r.expect(events...)
	return r
}

func (r *recorder) expect(events ...eventsource.Envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.want = append(r.want, events...)
}

func (r *recorder) record(env eventsource.Envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[env.ID]++
	r.order = append(r.order, env.Position)
}

func (r *recorder) count(id uuid.UUID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[id]
}

func (r *recorder) wantEachOnce(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, env := range r.want {
		if n := r.counts[env.ID]; n != 1 {
			t.Errorf("event at position %d applied %d times, want once", env.Position, n)
		}
	}
	if len(r.order) != len(r.want) {
		t.Errorf("%d events applied, want %d", len(r.order), len(r.want))
	}
}

func (r *recorder) wantInOrder(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := 1; i < len(r.order); i++ {
		if r.order[i] <= r.order[i-1] {
			t.Fatalf("applied out of order: positions %v", r.order)
		}
	}
}

// logRecorder is a slog.Handler that counts warnings.
type logRecorder struct {
	mu    sync.Mutex
	warns int
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.Level == slog.LevelWarn {
		l.warns++
	}
	return nil
}

func (l *logRecorder) warnings() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.warns
}

var errCheckpointsDown = errors.New("followtest: checkpoint store down")

// flakyCheckpoints fails SaveCheckpoint while told to.
type flakyCheckpoints struct {
	eventstore.CheckpointStore
	mu    sync.Mutex
	fails int // saves left to fail; below zero, all of them
}

func (c *flakyCheckpoints) failSaves(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fails = n
}

func (c *flakyCheckpoints) remaining() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fails
}

func (c *flakyCheckpoints) SaveCheckpoint(ctx context.Context, name string, position int64) error {
	c.mu.Lock()
	fail := c.fails != 0
	if c.fails > 0 {
		c.fails--
	}
	c.mu.Unlock()
	if fail {
		return errCheckpointsDown
	}
	return c.CheckpointStore.SaveCheckpoint(ctx, name, position)
}

// testStatusCountsTheBacklog: a follower that starts behind (a restart
// after downtime) reports the whole backlog as its lag from its first
// event, not only what its reads have reached, on a store that can say
// its head (eventstore.HeadReader).
func testStatusCountsTheBacklog(t *testing.T, s eventstore.Store, c eventstore.CheckpointStore) {
	if _, ok := s.(eventstore.HeadReader); !ok {
		t.Skipf("%T cannot say its head", s)
	}
	events := appendEvents(t, s, 50)
	last := events[len(events)-1].Position
	f := newFollower(t, c, s, events[0])
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := f.CatchUp(ctx, func(ctx context.Context, env eventsource.Envelope) error {
			if env.ID == events[0].ID {
				<-release // hold the first event: the rest is the backlog
			}
			return nil
		})
		done <- err
	}()
	waitRunning(t, "the backlog in the status", done, func() bool {
		st := f.Status()
		return st.Head >= last && st.Lag() >= int64(len(events)-1)
	})
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := f.Status(); st.Lag() != 0 || st.Position < last {
		t.Fatalf("status after the catch-up %+v, want no lag at position %d", st, last)
	}
}
