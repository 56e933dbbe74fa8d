package projection_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/projection"
)

// pingCounter counts Ping events and can be told to fail once on one N.
type pingCounter struct {
	sum    int
	seen   int
	failOn int
}

func (p *pingCounter) EventTypes() []string { return []string{bustest.Ping{}.EventType()} }
func (p *pingCounter) Handle(_ context.Context, env eventsource.Envelope) error {
	n := env.Event.(bustest.Ping).N
	if n == p.failOn {
		p.failOn = 0
		return errors.New("transient failure")
	}
	p.sum += n
	p.seen++
	return nil
}
func (p *pingCounter) Reset(context.Context) error { p.sum, p.seen = 0, 0; return nil }

func appendEvents(t *testing.T, store eventstore.Store, stream string, events ...eventsource.Event) {
	t.Helper()
	var envs []eventsource.Envelope
	for _, e := range events {
		envs = append(envs, bustest.NewEnvelope(stream, 0, e))
	}
	if _, err := store.Append(context.Background(), stream, eventstore.AnyVersion, envs); err != nil {
		t.Fatal(err)
	}
}

func TestRunnerCatchUpCheckpointAndRebuild(t *testing.T) {
	ctx := context.Background()
	store := eventstore.NewMemory()
	checkpoints := eventstore.NewMemoryCheckpoints()
	appendEvents(t, store, "s1", bustest.Ping{N: 1}, bustest.Pong{N: 100}, bustest.Ping{N: 2})
	p := &pingCounter{failOn: 3}
	r := projection.NewRunner("pings", p, store, checkpoints)

	if n, err := r.CatchUp(ctx); err != nil || n != 3 || p.sum != 3 {
		t.Fatalf("first catch-up read %d, sum %d, %v; want 3 events read, sum 3 (Pong ignored)", n, p.sum, err)
	}
	appendEvents(t, store, "s2", bustest.Ping{N: 3}, bustest.Ping{N: 4})
	if _, err := r.CatchUp(ctx); err == nil {
		t.Fatal("a failing projection did not stop the catch-up")
	}
	if cp, _ := checkpoints.Checkpoint(ctx, "pings"); cp != 3 {
		t.Fatalf("checkpoint after a failure at position 4 = %d, want 3", cp)
	}
	if n, err := r.CatchUp(ctx); err != nil || n != 2 || p.sum != 10 || p.seen != 4 {
		t.Fatalf("retry read %d, sum %d, seen %d, %v; want 2 read, sum 10, 4 pings", n, p.sum, p.seen, err)
	}

	// A second runner with the same checkpoint name resumes, not restarts.
	resumed := &pingCounter{}
	if n, err := projection.NewRunner("pings", resumed, store, checkpoints).CatchUp(ctx); err != nil || n != 0 {
		t.Fatalf("resumed runner read %d, %v; want 0", n, err)
	}

	if n, err := r.Rebuild(ctx); err != nil || n != 5 || p.sum != 10 || p.seen != 4 {
		t.Fatalf("rebuild read %d, sum %d, seen %d, %v; want 5, 10, 4", n, p.sum, p.seen, err)
	}
}

// plainProjection cannot be reset.
type plainProjection struct{ *bustest.Recorder }

func (plainProjection) EventTypes() []string { return []string{bustest.Ping{}.EventType()} }

func TestRebuildNeedsResetter(t *testing.T) {
	r := projection.NewRunner("x", plainProjection{bustest.NewRecorder()}, eventstore.NewMemory(), eventstore.NewMemoryCheckpoints())
	if _, err := r.Rebuild(context.Background()); err == nil {
		t.Error("Rebuild of a projection without Reset succeeded")
	}
}

// syncCounter sums Ping events under a lock, so a test can read it while a
// runner applies events. It blocks in Handle on the Ping whose N is blockOn
// until ctx ends, then applies it anyway (a handler that finishes its work
// during a stop), and fails while failures are left.
type syncCounter struct {
	mu       sync.Mutex
	sum      int
	applied  map[int]int // N to times applied
	blockOn  int
	entered  chan struct{}
	failures int
}

func newSyncCounter() *syncCounter {
	return &syncCounter{applied: make(map[int]int), entered: make(chan struct{})}
}

func (p *syncCounter) EventTypes() []string { return []string{bustest.Ping{}.EventType()} }
func (p *syncCounter) Handle(ctx context.Context, env eventsource.Envelope) error {
	n := env.Event.(bustest.Ping).N
	p.mu.Lock()
	block := n == p.blockOn
	if block {
		p.blockOn = 0
	}
	fail := p.failures > 0
	if fail {
		p.failures--
	}
	p.mu.Unlock()
	if block {
		close(p.entered)
		<-ctx.Done()
	}
	if fail {
		return errors.New("read model unavailable")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sum += n
	p.applied[n]++
	return nil
}

func (p *syncCounter) times(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied[n]
}

func (p *syncCounter) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sum
}

const runTimeout = 30 * time.Second

func startRunner(ctx context.Context, r *projection.Runner) <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, 5*time.Millisecond) }()
	return done
}

// waitRunner waits for cond, failing at once if Run returns.
func waitRunner(t *testing.T, what string, done <-chan error, cond func() bool) {
	t.Helper()
	end := time.Now().Add(runTimeout)
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("Run returned %v while waiting for %s; a runner must keep going while its ctx lives", err, what)
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", runTimeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func runnerStopped(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(runTimeout):
		t.Fatalf("Run did not return within %v of its context ending", runTimeout)
		return nil
	}
}

// A runner stopped while its projection applies an event records that
// event: the restarted runner does not apply it again, so the read model
// does not double count.
func TestRunGracefulStopDoesNotReapply(t *testing.T) {
	store := eventstore.NewMemory()
	checkpoints := eventstore.NewMemoryCheckpoints()
	appendEvents(t, store, "s1", bustest.Ping{N: 1}, bustest.Ping{N: 2}, bustest.Ping{N: 3})
	p := newSyncCounter()
	p.blockOn = 2

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := startRunner(ctx, projection.NewRunner("pings", p, store, checkpoints))
	select {
	case <-p.entered:
	case <-time.After(runTimeout):
		t.Fatal("the projection never started on the second event")
	}
	cancel()
	if err := runnerStopped(t, done); err != nil {
		t.Fatalf("Run after a graceful stop = %v, want nil", err)
	}
	if cp, _ := checkpoints.Checkpoint(t.Context(), "pings"); cp != 2 {
		t.Fatalf("checkpoint after a stop during event 2 = %d, want 2", cp)
	}

	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	done = startRunner(ctx, projection.NewRunner("pings", p, store, checkpoints))
	waitRunner(t, "the third event", done, func() bool { return p.times(3) > 0 })
	cancel()
	if err := runnerStopped(t, done); err != nil {
		t.Fatalf("Run after the restart = %v, want nil", err)
	}
	for n := 1; n <= 3; n++ {
		if got := p.times(n); got != 1 {
			t.Errorf("Ping %d applied %d times, want once", n, got)
		}
	}
	if got := p.total(); got != 6 {
		t.Errorf("sum = %d, want 6", got)
	}
}

// A failing projection is retried; Run keeps going and applies everything.
func TestRunRetriesAFailingProjection(t *testing.T) {
	store := eventstore.NewMemory()
	appendEvents(t, store, "s1", bustest.Ping{N: 1}, bustest.Ping{N: 2})
	p := newSyncCounter()
	p.failures = 3
	r := projection.NewRunner("pings", p, store, eventstore.NewMemoryCheckpoints(),
		projection.WithBackoff(time.Millisecond, 10*time.Millisecond), projection.WithLogger(slog.New(slog.DiscardHandler)))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := startRunner(ctx, r)
	waitRunner(t, "both events", done, func() bool { return p.times(2) > 0 })
	appendEvents(t, store, "s2", bustest.Ping{N: 3})
	waitRunner(t, "an event stored after the recovery", done, func() bool { return p.times(3) > 0 })
	cancel()
	if err := runnerStopped(t, done); err != nil {
		t.Fatalf("Run after its ctx ended = %v, want nil", err)
	}
	if got := p.total(); got != 6 {
		t.Errorf("sum = %d, want 6", got)
	}
	if st := r.Status(); st.Position != 3 || st.ConsecutiveFailures != 0 || st.LastError == nil {
		t.Errorf("status = %+v; want position 3, no consecutive failures, the last error kept", st)
	}
}
