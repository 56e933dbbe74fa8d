package bus_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

const wait = 10 * time.Second

func ping(agg string, v int64) eventsource.Envelope {
	return bustest.NewEnvelope(agg, v, bustest.Ping{N: int(v)})
}

func closeBus(t *testing.T, b *bus.InProcess) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// gate is a handler that blocks until released, to fill buffers on purpose.
type gate struct {
	entered chan struct{}
	release chan struct{}
	rec     *bustest.Recorder
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 100), release: make(chan struct{}), rec: bustest.NewRecorder()}
}

func (g *gate) Handle(ctx context.Context, env eventsource.Envelope) error {
	g.entered <- struct{}{}
	<-g.release
	return g.rec.Handle(ctx, env)
}

func TestAsyncDropNewestCountsDrops(t *testing.T) {
	b := bus.NewInProcess(bus.WithLogger(discardLogger()))
	g := newGate()
	if _, err := b.SubscribeAll(g, bus.Async(2, bus.DropNewest)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Publish(ctx, ping("a", 1)); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the handler holds event 1; the buffer (2) is empty
	for v := int64(2); v <= 6; v++ {
		if err := b.Publish(ctx, ping("a", v)); err != nil {
			t.Fatalf("drop policy made Publish fail: %v", err)
		}
	}
	if st := b.Stats(); st.Dropped != 3 || st.InFlight != 3 {
		t.Errorf("dropped %d, in flight %d; want 3 dropped (4, 5, 6), 3 in flight", st.Dropped, st.InFlight)
	}
	close(g.release)
	closeBus(t, b)
	var got []int64
	for _, e := range g.rec.Got() {
		got = append(got, e.Version)
	}
	if len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Errorf("handled %v, want [1 2 3] in order", got)
	}
}

func TestAsyncBlockAppliesBackpressure(t *testing.T) {
	b := bus.NewInProcess(bus.WithLogger(discardLogger()))
	g := newGate()
	if _, err := b.SubscribeAll(g, bus.Async(1, bus.Block)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Publish(ctx, ping("a", 1)); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	if err := b.Publish(ctx, ping("a", 2)); err != nil { // fills the buffer
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := b.Publish(short, ping("a", 3)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish into a full blocking subscriber = %v, want the context's deadline", err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- b.Publish(ctx, ping("a", 4)) }()
	select {
	case err := <-blocked:
		t.Fatalf("Publish returned (%v) while the subscriber's buffer was full", err)
	case <-time.After(20 * time.Millisecond): // proving a negative needs a bound; success does not depend on it
	}
	close(g.release)
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	closeBus(t, b)
	if n := g.rec.Len(); n != 3 {
		t.Errorf("handled %d events, want 3 (1, 2, 4)", n)
	}
	if st := b.Stats(); st.Dropped != 1 {
		t.Errorf("dropped %d, want 1 (the publish that gave up)", st.Dropped)
	}
}

func TestCloseWithExpiredContextAbandonsQueue(t *testing.T) {
	b := bus.NewInProcess(bus.WithLogger(discardLogger()))
	g := newGate()
	if _, err := b.SubscribeAll(g, bus.Async(10, bus.Block)); err != nil {
		t.Fatal(err)
	}
	for v := int64(1); v <= 5; v++ {
		if err := b.Publish(context.Background(), ping("a", v)); err != nil {
			t.Fatal(err)
		}
	}
	<-g.entered
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a stuck handler = %v, want DeadlineExceeded", err)
	}
	close(g.release)
	// The goroutine finishes the running handler and drops the rest.
	deadline := time.Now().Add(wait)
	for b.Stats().InFlight != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("in flight stays %d after an abandoned Close", b.Stats().InFlight)
		}
		time.Sleep(time.Millisecond)
	}
	if st := b.Stats(); g.rec.Len() != 1 || st.Dropped != 4 {
		t.Errorf("handled %d, dropped %d; want 1 and 4", g.rec.Len(), st.Dropped)
	}
}

func TestHandlerFailuresAreLoggedAndReported(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	var reported []error
	b := bus.NewInProcess(
		bus.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))),
		bus.WithErrorHandler(func(_ context.Context, _ eventsource.Envelope, err error) {
			mu.Lock()
			reported = append(reported, err)
			mu.Unlock()
		}))
	boom := errors.New("boom")
	if _, err := b.Subscribe("BustestPing", bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return boom }), bus.WithName("failing")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe("BustestPing", bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { panic("kaboom") }), bus.WithName("panicking")); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), ping("a", 1)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 2 {
		t.Fatalf("error hook got %d errors, want 2", len(reported))
	}
	var he *bus.HandlerError
	if !errors.Is(reported[0], boom) || !errors.As(reported[0], &he) || he.Handler != "failing" {
		t.Errorf("first report = %v, want a HandlerError from 'failing' wrapping boom", reported[0])
	}
	if !errors.Is(reported[1], bus.ErrHandlerPanic) || !errors.As(reported[1], &he) || he.Panic != "kaboom" || len(he.Stack) == 0 {
		t.Errorf("second report = %v, want a panic HandlerError with a stack", reported[1])
	}
	for _, want := range []string{`"handler":"failing"`, `"handler":"panicking"`, `"event_type":"BustestPing"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}

func TestConcurrentHandlersRunTogether(t *testing.T) {
	b := bus.NewInProcess(bus.WithConcurrentHandlers(3))
	var running, peak atomic.Int32
	all := make(chan struct{})
	var once sync.Once
	h := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if n == 3 {
			once.Do(func() { close(all) })
		}
		select {
		case <-all:
		case <-time.After(wait):
		}
		running.Add(-1)
		return nil
	})
	for range 3 {
		if _, err := b.Subscribe("BustestPing", h); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(context.Background(), ping("a", 1)); err != nil {
		t.Fatal(err)
	}
	if peak.Load() != 3 || running.Load() != 0 {
		t.Errorf("peak %d concurrent handlers, %d still running after Publish; want 3 and 0", peak.Load(), running.Load())
	}
	if st := b.Stats(); st.HandlersInvoked != 3 {
		t.Errorf("invoked %d, want 3", st.HandlersInvoked)
	}
}

func TestBackgroundKeepsOrderPerAggregate(t *testing.T) {
	b := bus.NewInProcess(bus.WithBackground(4, 8))
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for v := int64(1); v <= 200; v++ {
		for _, agg := range []string{"a", "b", "c"} {
			if err := b.PublishAsync(ctx, ping(agg, v)); err != nil {
				t.Fatal(err)
			}
		}
	}
	closeBus(t, b)
	last := map[string]int64{}
	for _, e := range rec.Got() {
		if e.Version != last[e.AggregateID]+1 {
			t.Fatalf("aggregate %s: %d after %d", e.AggregateID, e.Version, last[e.AggregateID])
		}
		last[e.AggregateID] = e.Version
	}
	if rec.Len() != 600 {
		t.Errorf("delivered %d, want 600", rec.Len())
	}
}

func TestUnsubscribeAsyncDrainsBuffer(t *testing.T) {
	b := bus.NewInProcess()
	g := newGate()
	sub, err := b.SubscribeAll(g, bus.Async(10, bus.Block))
	if err != nil {
		t.Fatal(err)
	}
	for v := int64(1); v <= 4; v++ {
		if err := b.Publish(context.Background(), ping("a", v)); err != nil {
			t.Fatal(err)
		}
	}
	<-g.entered
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), ping("a", 5)); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	closeBus(t, b)
	if g.rec.Len() != 4 {
		t.Errorf("handled %d, want the 4 events buffered before Unsubscribe", g.rec.Len())
	}
	if st := b.Stats(); st.WildcardSubscribers != 0 || st.HandlersInvoked != 4 {
		t.Errorf("stats after unsubscribe: wildcard %d, invoked %d", st.WildcardSubscribers, st.HandlersInvoked)
	}
}

func TestAsyncBufferMustBePositive(t *testing.T) {
	b := bus.NewInProcess()
	if _, err := b.SubscribeAll(bustest.NewRecorder(), bus.Async(0, bus.Block)); !errors.Is(err, bus.ErrInvalidSubscription) {
		t.Errorf("Async(0) = %v, want ErrInvalidSubscription", err)
	}
}
