package repository_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/repository"
)

// relayTimeout bounds every wait in the relay tests.
const relayTimeout = 30 * time.Second

type relayed struct{ N int }

func (relayed) EventType() string { return "relay_test.Relayed" }

var errBrokerDown = errors.New("broker down")

// flakyBus fails its first fails publishes, then records what it is given.
// The embedded Bus is nil: the relay only publishes.
type flakyBus struct {
	bus.Bus
	mu        sync.Mutex
	fails     int // publishes left to fail; below zero, all of them
	attempts  int
	published []eventsource.Envelope
}

func (b *flakyBus) Publish(ctx context.Context, events ...eventsource.Envelope) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.attempts++
	if b.fails != 0 {
		if b.fails > 0 {
			b.fails--
		}
		return errBrokerDown
	}
	b.published = append(b.published, events...)
	return nil
}

func (b *flakyBus) got() []eventsource.Envelope {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]eventsource.Envelope(nil), b.published...)
}

func (b *flakyBus) tries() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attempts
}

func appendRelayed(t *testing.T, store eventstore.Store, n int) {
	t.Helper()
	envs := make([]eventsource.Envelope, n)
	for i := range envs {
		envs[i] = eventsource.NewEnvelope(relayed{N: i})
		envs[i].AggregateType, envs[i].AggregateID = "Relayed", "r"
	}
	if _, err := store.Append(t.Context(), "Relayed-r", eventstore.AnyVersion, envs); err != nil {
		t.Fatal(err)
	}
}

// runRelay starts r.Run; the channel receives what it returns.
func runRelay(ctx context.Context, r *repository.Relay) <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, 5*time.Millisecond) }()
	return done
}

// waitRelay waits for cond, failing at once if Run returns.
func waitRelay(t *testing.T, what string, done <-chan error, cond func() bool) {
	t.Helper()
	end := time.Now().Add(relayTimeout)
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("Run returned %v while waiting for %s; a relay must keep going while its ctx lives", err, what)
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", relayTimeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// warnCounter is a slog.Handler that counts warnings.
type warnCounter struct {
	mu sync.Mutex
	n  int
}

func (w *warnCounter) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnCounter) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *warnCounter) WithGroup(string) slog.Handler            { return w }
func (w *warnCounter) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.Level == slog.LevelWarn {
		w.n++
	}
	return nil
}

func (w *warnCounter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func relayStopped(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(relayTimeout):
		t.Fatalf("Run did not return within %v of its context ending", relayTimeout)
		return nil
	}
}

// A bus that was down delays events but does not lose them, and does not
// stop the relay.
func TestRelayRunRetriesAFailingBus(t *testing.T) {
	const failures = 4
	store := eventstore.NewMemory()
	appendRelayed(t, store, 3)
	b := &flakyBus{fails: failures}
	logs := &warnCounter{}
	r := repository.NewRelay("relay", store, eventstore.NewMemoryCheckpoints(), b,
		repository.WithRelayBackoff(time.Millisecond, 10*time.Millisecond), repository.WithRelayLogger(slog.New(logs)))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := runRelay(ctx, r)
	waitRelay(t, "the events after the bus recovered", done, func() bool { return len(b.got()) == 3 })
	appendRelayed(t, store, 2)
	waitRelay(t, "events stored after the recovery", done, func() bool { return len(b.got()) == 5 })
	cancel()
	if err := relayStopped(t, done); err != nil {
		t.Fatalf("Run after its ctx ended = %v, want nil", err)
	}

	got := b.got()
	if len(got) != 5 {
		t.Fatalf("%d events published, want 5, each once", len(got))
	}
	for i, e := range got {
		if e.Position != int64(i+1) {
			t.Fatalf("event %d has position %d: published out of order or twice", i, e.Position)
		}
	}
	// One Publish per batch: the first three events, then the two
	// appended together.
	if n := b.tries(); n != failures+2 {
		t.Errorf("%d publish attempts, want %d (%d failures, then one per batch)", n, failures+2, failures)
	}
	if n := logs.count(); n != failures {
		t.Errorf("%d failures logged, want %d", n, failures)
	}
	if st := r.Status(); st.Position != 5 || st.Saved != 5 || st.ConsecutiveFailures != 0 || !errors.Is(st.LastError, errBrokerDown) {
		t.Errorf("status = %+v; want position and saved 5, no consecutive failures, the last error kept", st)
	}
}

// A relay waiting to retry returns as soon as its ctx ends.
func TestRelayRunStopsPromptlyWhileRetrying(t *testing.T) {
	store := eventstore.NewMemory()
	appendRelayed(t, store, 1)
	b := &flakyBus{fails: -1}
	// Only a stop ends an hour's wait.
	r := repository.NewRelay("relay", store, eventstore.NewMemoryCheckpoints(), b,
		repository.WithRelayBackoff(time.Hour, time.Hour), repository.WithRelayLogger(slog.New(&warnCounter{})))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := runRelay(ctx, r)
	waitRelay(t, "a failure in the status", done, func() bool { return r.Status().ConsecutiveFailures == 1 })
	if st := r.Status(); !errors.Is(st.LastError, errBrokerDown) || st.Position != 0 {
		t.Errorf("status while failing = %+v; want the bus's error at position 0", st)
	}
	cancel()
	if err := relayStopped(t, done); err != nil {
		t.Fatalf("Run after its ctx ended = %v, want nil", err)
	}
}
