package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

// TestPublishRacingCloseReportsUndeliveredAsync: a synchronous Publish that
// began before Close reaches an asynchronous subscriber only after Close
// stopped it. The event never reaches that subscriber, so Publish must not
// report success: it returns ErrClosed, as a publisher woken from a full
// buffer by Close does.
func TestPublishRacingCloseReportsUndeliveredAsync(t *testing.T) {
	b := bus.NewInProcess(bus.WithLogger(discardLogger()))
	g := newGate()
	if _, err := b.SubscribeAll(g, bus.WithName("sync-first")); err != nil {
		t.Fatal(err)
	}
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(rec, bus.Async(4, bus.Block), bus.WithName("async")); err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() { published <- b.Publish(context.Background(), ping("a", 1)) }()
	recv(t, g.entered, "synchronous handler entered")
	closeBus(t, b) // does not wait for the synchronous Publish
	close(g.release)
	err := recv(t, published, "Publish")
	if !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Publish that lost its async delivery to Close = %v, want ErrClosed", err)
	}
	if rec.Len() != 0 {
		t.Fatalf("async subscriber got %d events after Close", rec.Len())
	}
	if st := b.Stats(); st.Dropped != 1 {
		t.Errorf("dropped %d, want 1", st.Dropped)
	}
}

// TestStatsSnapshotIsConsistent: a snapshot taken while events flow never
// shows a counter lower than before, more handler errors than calls, more
// panics than errors, a negative number in flight, or more deliveries than
// publishes times subscriptions.
func TestStatsSnapshotIsConsistent(t *testing.T) {
	b := bus.NewInProcess(bus.WithLogger(discardLogger()))
	failing := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { panic("always") })
	if _, err := b.SubscribeAll(failing); err != nil { // one synchronous handler
		t.Fatal(err)
	}
	if _, err := b.SubscribeAll(failing, bus.Async(1024, bus.DropNewest)); err != nil {
		t.Fatal(err)
	}
	const events = 20000
	var wg sync.WaitGroup
	var done atomic.Bool
	wg.Go(func() {
		defer done.Store(true)
		for v := range int64(events) {
			if err := b.Publish(context.Background(), ping("a", v+1)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var bad []string
	var prev bus.Stats
	for !done.Load() && len(bad) < 5 {
		st := b.Stats()
		switch {
		case st.Published < prev.Published || st.Delivered < prev.Delivered || st.HandlersInvoked < prev.HandlersInvoked:
			bad = append(bad, "a counter went back: "+fmtStats(prev)+" then "+fmtStats(st))
		case st.InFlight < 0:
			bad = append(bad, "negative in flight: "+fmtStats(st))
		case st.HandlerErrors > st.HandlersInvoked:
			bad = append(bad, "more errors than calls: "+fmtStats(st))
		case st.HandlerPanics > st.HandlerErrors:
			bad = append(bad, "more panics than errors: "+fmtStats(st))
		case st.Delivered > 2*st.Published:
			bad = append(bad, "more deliveries than 2 per publish: "+fmtStats(st))
		}
		prev = st
	}
	wg.Wait()
	closeBus(t, b)
	if len(bad) > 0 {
		t.Errorf("inconsistent snapshots:\n%s", strings.Join(bad, "\n"))
	}
}

func fmtStats(st bus.Stats) string {
	st.Subscribers = nil
	return fmt.Sprintf("%+v", st)
}

// TestAsyncRejectsUnknownOverflowPolicy: an overflow policy the bus does not
// know is an option it does not support (ErrInvalidSubscription), not
// silently Block.
func TestAsyncRejectsUnknownOverflowPolicy(t *testing.T) {
	b := bus.NewInProcess(bus.WithLogger(discardLogger()))
	defer closeBus(t, b)
	if _, err := b.SubscribeAll(bustest.NewRecorder(), bus.Async(1, bus.OverflowPolicy(2))); !errors.Is(err, bus.ErrInvalidSubscription) {
		t.Errorf("Async with %v = %v, want ErrInvalidSubscription", bus.OverflowPolicy(2), err)
	}
}

// TestTimeoutNamesOnlyItsOwnDeadline: Timeout's error says "timeout" only
// when its deadline is what ended the handler, not on every failure.
func TestTimeoutNamesOnlyItsOwnDeadline(t *testing.T) {
	env := bustest.NewEnvelope("t", 1, bustest.Ping{})
	boom := errors.New("boom")
	failing := bus.Timeout(time.Minute)(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return boom }))
	if err := failing.Handle(context.Background(), env); !errors.Is(err, boom) || err.Error() != "boom" {
		t.Errorf("a handler failing within its time = %q, want %q", err, "boom")
	}
	// The caller's ctx ending (the bus closing) is not this timeout.
	parent, cancel := context.WithCancel(context.Background())
	cancel()
	honouring := bus.Timeout(time.Minute)(bus.HandlerFunc(func(ctx context.Context, _ eventsource.Envelope) error {
		<-ctx.Done()
		return ctx.Err()
	}))
	if err := honouring.Handle(parent, env); !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "timeout") {
		t.Errorf("a handler whose caller's ctx ended = %q, want context.Canceled without a timeout", err)
	}
	timedOut := bus.Timeout(time.Millisecond)(bus.HandlerFunc(func(ctx context.Context, _ eventsource.Envelope) error {
		<-ctx.Done()
		return ctx.Err()
	}))
	if err := timedOut.Handle(context.Background(), env); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timeout 1ms") {
		t.Errorf("a handler that timed out = %q, want DeadlineExceeded naming the timeout", err)
	}
}

type ptrPing struct{ N int }

func (*ptrPing) EventType() string { return "ReviewPtrPing" }

// TestOnTypeMismatchIsPermanent: a payload of another Go type (a value where
// the handler takes a pointer) fails clearly, and permanently: retrying the
// same payload cannot succeed, so a broker bus should not spend its retries.
func TestOnTypeMismatchIsPermanent(t *testing.T) {
	var mu sync.Mutex
	var reported []error
	b := bus.NewInProcess(bus.WithLogger(discardLogger()), bus.WithErrorHandler(func(_ context.Context, _ eventsource.Envelope, err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}))
	defer closeBus(t, b)
	called := false
	if _, err := bus.On(b, func(context.Context, *ptrPing, eventsource.Envelope) error { called = true; return nil }); err != nil {
		t.Fatal(err)
	}
	env := bustest.NewEnvelope("p", 1, bustest.Ping{})
	env.Type = "ReviewPtrPing" // a value payload under the pointer type's name
	if err := b.Publish(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if called || len(reported) != 1 {
		t.Fatalf("handler called %v, %d errors reported; want not called, 1 error", called, len(reported))
	}
	err := reported[0]
	if !errors.Is(err, eventsource.ErrInvalidEvent) || !errors.Is(err, bus.ErrPermanent) || !strings.Contains(err.Error(), "*bus_test.ptrPing") {
		t.Errorf("mismatch = %v, want ErrInvalidEvent and ErrPermanent naming the expected type", err)
	}
}

// TestSyncPanicDoesNotStopLaterHandlers: every handler after a panicking
// one still runs, synchronous or not, and the panic is counted once.
func TestSyncPanicDoesNotStopLaterHandlers(t *testing.T) {
	for _, concurrent := range []int{0, 4} {
		b := bus.NewInProcess(bus.WithLogger(discardLogger()), bus.WithConcurrentHandlers(concurrent))
		before := bustest.NewRecorder()
		after := bustest.NewRecorder()
		async := bustest.NewRecorder()
		for _, h := range []bus.Handler{before, bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { panic("x") }), after} {
			if _, err := b.SubscribeAll(h); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.SubscribeAll(async, bus.Async(4, bus.Block)); err != nil {
			t.Fatal(err)
		}
		mustPublish(t, b, ping("a", 1), ping("a", 2))
		closeBus(t, b)
		st := b.Stats()
		if before.Len() != 2 || after.Len() != 2 || async.Len() != 2 || st.HandlerPanics != 2 || st.HandlerErrors != 2 || st.HandlersInvoked != 8 {
			t.Errorf("concurrency %d: handled %d/%d/%d, stats %+v; want 2 each, 2 panics, 8 calls",
				concurrent, before.Len(), after.Len(), async.Len(), st)
		}
	}
}

// TestInProcessDefaultNames: a subscription made without WithName is named
// after its sorted event types, as on every bus, however many are made:
// the name labels metrics and logs, whose series must stay bounded when
// subscriptions come and go.
func TestInProcessDefaultNames(t *testing.T) {
	b := bus.NewInProcess()
	defer b.Close(context.Background())
	names := map[string]bool{}
	record := func(next bus.Handler) bus.Handler {
		info, _ := bus.SubscriptionOf(next)
		names[info.Name] = true
		return next
	}
	nop := bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return nil })
	for range 50 {
		s, err := b.SubscribeTypes([]string{"B", "A", "B"}, nop, bus.WithMiddleware(record))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.SubscribeAll(nop, bus.WithMiddleware(record)); err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || !names["A,B"] || !names["*"] {
		t.Fatalf("default names %v, want exactly A,B and *", names)
	}
}
