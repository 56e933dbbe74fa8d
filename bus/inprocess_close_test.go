package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

// stuck is a handler that blocks until released or until its context ends,
// like a handler waiting on a slow dependency.
type stuck struct {
	entered   chan struct{}
	release   chan struct{}
	cancelled chan struct{} // closed once a handler saw its context end
	once      sync.Once
}

func newStuck(t *testing.T) *stuck {
	s := &stuck{entered: make(chan struct{}, 100), release: make(chan struct{}), cancelled: make(chan struct{})}
	// Unblocks everything should the test fail half-way.
	t.Cleanup(func() { close(s.release) })
	return s
}

func (s *stuck) Handle(ctx context.Context, _ eventsource.Envelope) error {
	s.entered <- struct{}{}
	select {
	case <-s.release:
	case <-ctx.Done():
		s.once.Do(func() { close(s.cancelled) })
	}
	return nil
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("%s: nothing after %v", what, wait)
	}
	var zero T
	return zero
}

// TestCloseHonoursContextWhilePublisherBlocked: a publisher waiting for room
// in a full buffer, behind a handler that does not return, must not keep
// Close past its context.
func TestCloseHonoursContextWhilePublisherBlocked(t *testing.T) {
	tests := []struct {
		name string
		// setup leaves a publisher blocked, reporting its result on the
		// channel, and returns the function it is blocked in.
		setup func(t *testing.T, b *bus.InProcess, h *stuck, published chan<- error) string
	}{
		{"Publish into a full Async(Block) buffer", func(t *testing.T, b *bus.InProcess, h *stuck, published chan<- error) string {
			if _, err := b.SubscribeAll(h, bus.Async(1, bus.Block)); err != nil {
				t.Fatal(err)
			}
			mustPublish(t, b, ping("a", 1))
			recv(t, h.entered, "handler entered")
			mustPublish(t, b, ping("a", 2)) // fills the buffer
			go func() { published <- b.Publish(context.Background(), ping("a", 3)) }()
			return "(*asyncDelivery).enqueue"
		}},
		{"PublishAsync into a full background queue", func(t *testing.T, b *bus.InProcess, h *stuck, published chan<- error) string {
			if _, err := b.SubscribeAll(h); err != nil {
				t.Fatal(err)
			}
			mustPublishAsync(t, b, ping("a", 1))
			recv(t, h.entered, "handler entered")
			mustPublishAsync(t, b, ping("a", 2)) // fills the queue
			go func() { published <- b.PublishAsync(context.Background(), ping("a", 3)) }()
			return "(*InProcess).PublishAsync"
		}},
		{"background worker into a full Async(Block) buffer", func(t *testing.T, b *bus.InProcess, h *stuck, published chan<- error) string {
			if _, err := b.SubscribeAll(h, bus.Async(1, bus.Block)); err != nil {
				t.Fatal(err)
			}
			mustPublishAsync(t, b, ping("a", 1))
			recv(t, h.entered, "handler entered")
			mustPublishAsync(t, b, ping("a", 2)) // fills the buffer
			mustPublishAsync(t, b, ping("a", 3)) // the worker blocks on it
			published <- nil
			return "(*asyncDelivery).enqueue"
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := busGoroutines()
			b := bus.NewInProcess(bus.WithLogger(discardLogger()), bus.WithBackground(1, 1))
			h := newStuck(t)
			published := make(chan error, 1)
			waitParked(t, tc.setup(t, b, h, published), wait)

			const timeout = 200 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			closed := make(chan error, 1)
			go func() { closed <- b.Close(ctx) }()
			select {
			case err := <-closed:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Close = %v, want the context's deadline", err)
				}
			case <-time.After(timeout + 5*time.Second):
				t.Fatalf("Close with a %v context still blocked after %v", timeout, timeout+5*time.Second)
			}
			if err := recv(t, published, "blocked publisher"); err != nil &&
				!errors.Is(err, bus.ErrClosed) && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("blocked publisher = %v, want nil, ErrClosed or its context's error", err)
			}
			recv(t, h.cancelled, "handler context cancelled")
			waitBusGoroutinesGone(t, before, wait)
		})
	}
}

// TestPublishAsyncRacingClose: the background workers start lazily, on the
// first PublishAsync; one that races Close must neither race on the
// workers' state nor start workers that nothing stops.
func TestPublishAsyncRacingClose(t *testing.T) {
	ctx := context.Background()
	for range 50 {
		before := busGoroutines()
		b := bus.NewInProcess(bus.WithLogger(discardLogger()), bus.WithBackground(2, 4))
		rec := bustest.NewRecorder()
		if _, err := b.SubscribeAll(rec); err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var pubErr, closeErr error
		wg.Go(func() { <-start; pubErr = b.PublishAsync(ctx, ping("a", 1)) })
		wg.Go(func() { <-start; closeErr = b.Close(ctx) })
		close(start)
		wg.Wait()
		if closeErr != nil {
			t.Fatalf("Close: %v", closeErr)
		}
		want := 0
		switch {
		case pubErr == nil:
			want = 1 // accepted before Close, so Close drained it
		case !errors.Is(pubErr, bus.ErrClosed):
			t.Fatalf("PublishAsync racing Close = %v, want nil or ErrClosed", pubErr)
		}
		if st := b.Stats(); rec.Len() != want || st.Published != uint64(want) || st.BackgroundTasks != 0 {
			t.Fatalf("PublishAsync = %v: handled %d, published %d, background tasks %d; want %d, %d, 0",
				pubErr, rec.Len(), st.Published, st.BackgroundTasks, want, want)
		}
		if err := b.PublishAsync(ctx, ping("a", 2)); !errors.Is(err, bus.ErrClosed) {
			t.Fatalf("PublishAsync after Close = %v, want ErrClosed", err)
		}
		waitBusGoroutinesGone(t, before, wait)
	}
}

// TestPublishAsyncCountsPublishedOnAcceptance: Stats.Published counts what
// PublishAsync accepted when it returns, not when a worker gets to it, and
// never twice.
func TestPublishAsyncCountsPublishedOnAcceptance(t *testing.T) {
	b := bus.NewInProcess(bus.WithLogger(discardLogger()), bus.WithBackground(1, 3))
	g := newGate()
	if _, err := b.Subscribe(bustest.Ping{}.EventType(), g); err != nil {
		t.Fatal(err)
	}
	mustPublishAsync(t, b, ping("a", 1))
	recv(t, g.entered, "handler entered") // the only worker is busy from now on
	// Two types with a subscriber, one without: both kinds of counter.
	mustPublishAsync(t, b, ping("a", 2), ping("a", 3), bustest.NewEnvelope("a", 4, bustest.Other{N: 4}))
	if st := b.Stats(); st.Published != 4 || st.BackgroundTasks != 4 {
		t.Errorf("after PublishAsync returned: published %d, background tasks %d; want 4, 4", st.Published, st.BackgroundTasks)
	}
	// The queue is full: a PublishAsync that gives up accepted nothing.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.PublishAsync(cancelled, ping("a", 5)); !errors.Is(err, context.Canceled) {
		t.Fatalf("PublishAsync into a full queue with a cancelled ctx = %v, want context.Canceled", err)
	}
	mustPublish(t, b, bustest.NewEnvelope("a", 6, bustest.Pong{N: 6}))
	if st := b.Stats(); st.Published != 5 {
		t.Errorf("published %d, want 5 (4 in the background, 1 synchronous)", st.Published)
	}
	close(g.release)
	closeBus(t, b)
	if st := b.Stats(); st.Published != 5 || st.HandlersInvoked != 3 || st.BackgroundTasks != 0 {
		t.Errorf("after Close: published %d, invoked %d, background tasks %d; want 5, 3, 0",
			st.Published, st.HandlersInvoked, st.BackgroundTasks)
	}
}

func mustPublish(t *testing.T, b *bus.InProcess, events ...eventsource.Envelope) {
	t.Helper()
	if err := b.Publish(context.Background(), events...); err != nil {
		t.Fatal(err)
	}
}

func mustPublishAsync(t *testing.T, b *bus.InProcess, events ...eventsource.Envelope) {
	t.Helper()
	if err := b.PublishAsync(context.Background(), events...); err != nil {
		t.Fatal(err)
	}
}

// TestUnsubscribeReleasesBlockedPublisher: Unsubscribe needs the same gate
// as Close, so a publisher waiting for room must not keep it either.
func TestUnsubscribeReleasesBlockedPublisher(t *testing.T) {
	b := bus.NewInProcess(bus.WithLogger(discardLogger()))
	h := newStuck(t)
	sub, err := b.SubscribeAll(h, bus.Async(1, bus.Block))
	if err != nil {
		t.Fatal(err)
	}
	mustPublish(t, b, ping("a", 1))
	recv(t, h.entered, "handler entered")
	mustPublish(t, b, ping("a", 2)) // fills the buffer
	published := make(chan error, 1)
	go func() { published <- b.Publish(context.Background(), ping("a", 3)) }()
	waitParked(t, "(*asyncDelivery).enqueue", wait)
	unsubscribed := make(chan error, 1)
	go func() { unsubscribed <- sub.Unsubscribe() }()
	if err := recv(t, unsubscribed, "Unsubscribe"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, published, "blocked publisher"); err != nil {
		t.Errorf("publisher blocked on an unsubscribed subscriber = %v, want nil", err)
	}
	if st := b.Stats(); st.Dropped != 1 {
		t.Errorf("dropped %d, want 1 (event 3, for the unsubscribed subscriber)", st.Dropped)
	}
	// Events 1 and 2, buffered before Unsubscribe, are still handled.
	for range 2 {
		h.release <- struct{}{}
	}
	closeBus(t, b)
}
