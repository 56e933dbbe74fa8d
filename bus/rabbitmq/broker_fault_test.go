package rabbitmq

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

// rabbitmqctl runs the broker's CLI, skipping the test when it is missing.
func rabbitmqctl(t testing.TB, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		t.Skip("rabbitmqctl is not installed")
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// forceClose has the broker close b's connection (as an operator or a
// failover would), rather than the client; it reports whether it found it.
func forceClose(t testing.TB, b *Bus) bool {
	t.Helper()
	s := b.current()
	if s == nil {
		return false
	}
	_, port, _ := net.SplitHostPort(s.conn.LocalAddr().String())
	out := rabbitmqctl(t, "list_connections", "pid", "peer_port", "-q", "--no-table-headers")
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) == 2 && f[1] == port {
			rabbitmqctl(t, "close_connection", f[0], "test: forced close")
			return true
		}
	}
	return false
}

// brokerFaultsVar enables the tests that change the broker for every
// client (blockBroker).
const brokerFaultsVar = "EVENTSOURCE_BROKER_FAULTS"

// blockBroker raises a memory alarm: the broker stops reading from every
// connection that publishes. The watermark is restored when the test
// ends, and first thing, should the test fail half-way.
func blockBroker(t testing.TB) (unblock func()) {
	t.Helper()
	// The alarm is the broker's, not the test's: every other test using
	// this RabbitMQ would stall while it lasts. Opt in, with nothing else
	// running (.ci/run does, after the main run).
	if os.Getenv(brokerFaultsVar) == "" {
		t.Skipf("raises a broker-wide memory alarm that stalls every other user of this RabbitMQ: set %s=1 to run it on its own", brokerFaultsVar)
	}
	var once sync.Once
	unblock = func() {
		once.Do(func() { rabbitmqctl(t, "set_vm_memory_high_watermark", "0.4") })
	}
	t.Cleanup(unblock)
	rabbitmqctl(t, "set_vm_memory_high_watermark", "0.0000001")
	waitUntil(t, "memory alarm", func() bool {
		return strings.Contains(rabbitmqctl(t, "eval", "rabbit_alarm:get_alarms()."), "memory")
	})
	return unblock
}

// bigEvents returns n events of about size bytes each, on n aggregates.
func bigEvents(n, size int) []eventsource.Envelope {
	evs := make([]eventsource.Envelope, n)
	for i := range evs {
		evs[i] = bustest.NewEnvelope("big-"+string(rune('a'+i)), 1, bustest.Ping{N: i})
		evs[i].Metadata.Extra = map[string]string{"padding": strings.Repeat("x", size)}
	}
	return evs
}

// A blocked broker (memory alarm) stops reading the publishing
// connection: Publish must still return by its ctx, with an error, and
// not sit in a socket write for as long as the alarm lasts.
func TestPublishHonoursContextWhenBrokerBlocked(t *testing.T) {
	url := amqpURL(t)
	cfg := Config{URL: url, Registry: bustest.NewRegistry(), Exchange: exchange(), AllowUnroutable: true,
		ConnectionName: "blocked-" + t.Name()}
	cleanupTopology(t, url, cfg, "default")
	b := open(t, cfg)
	defer closeBus(t, b)
	unblock := blockBroker(t)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- b.Publish(ctx, bigEvents(16, 2<<20)...) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Publish to a blocked broker succeeded")
		}
		if !errors.Is(err, ErrUnconfirmed) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Publish = %v, want ErrUnconfirmed and the ctx's error", err)
		}
		t.Logf("Publish returned after %v: %.200v", time.Since(start), err)
	case <-time.After(10 * time.Second):
		unblock()
		err := <-done
		t.Fatalf("Publish with a 2s ctx still running after 10s while the broker is blocked (returned %v once unblocked)", err)
	}
}

// Close while a Publish waits on a blocked broker: Close returns by its
// ctx, and the Publish ends with an error, never a success.
func TestCloseWhilePublishBlocked(t *testing.T) {
	url := amqpURL(t)
	cfg := Config{URL: url, Registry: bustest.NewRegistry(), Exchange: exchange(), AllowUnroutable: true,
		ConnectionName: "blocked-close-" + t.Name()}
	cleanupTopology(t, url, cfg, "default")
	b := open(t, cfg)
	unblock := blockBroker(t)

	done := make(chan error, 1)
	go func() { done <- b.Publish(context.Background(), bigEvents(16, 2<<20)...) }()
	waitUntil(t, "publish under way", func() bool {
		s := b.current()
		if s == nil {
			return false
		}
		for _, p := range s.lanes {
			p.mu.Lock()
			n := p.n
			p.mu.Unlock()
			if n > 0 {
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	cerr := b.Close(ctx)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close with a 2s ctx took %v", d)
	}
	t.Logf("Close = %v", cerr)
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Publish to a blocked broker succeeded")
		}
		t.Logf("Publish = %.200v", err)
	case <-time.After(10 * time.Second):
		unblock()
		err := <-done
		t.Fatalf("Publish still running 10s after Close (returned %v once unblocked)", err)
	}
}

// The broker drops the connection while publishes wait for confirms and
// handlers still hold deliveries of the old channel: every Publish
// returns (the lost confirms sent again on the next connection), every
// event is delivered, and the settlements of the old channel's
// deliveries never reach the new one (an unknown delivery tag there would
// close it, and cost one more reconnect).
func TestBrokerDropsConnectionMidPublishAndConsume(t *testing.T) {
	url := amqpURL(t)
	cfg := Config{URL: url, Registry: bustest.NewRegistry(), Exchange: exchange(), ReconnectMin: 10 * time.Millisecond,
		ConnectionName: "drop-" + t.Name(), Prefetch: 64}
	cleanupTopology(t, url, cfg, "default")
	b := open(t, cfg)
	defer closeBus(t, b)

	var mu sync.Mutex
	seen := map[string]bool{}
	hold := make(chan struct{})
	var release sync.Once
	unhold := func() { release.Do(func() { close(hold) }) }
	defer unhold() // before closeBus, should the test fail half-way
	_, err := b.SubscribeAll(bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
		<-hold // settled only after the drop
		mu.Lock()
		seen[env.ID.String()] = true
		mu.Unlock()
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)

	const publishers, perCall, calls = 4, 50, 20
	ids := make(chan string, publishers*perCall*calls)
	errs := make(chan error, publishers*calls)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for c := range calls {
				evs := make([]eventsource.Envelope, perCall)
				for i := range evs {
					evs[i] = bustest.NewEnvelope("agg-"+string(rune('a'+p))+"-"+string(rune('a'+i%8)), int64(c*perCall+i+1), bustest.Ping{N: i})
					ids <- evs[i].ID.String()
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				errs <- b.Publish(ctx, evs...)
				cancel()
			}
		})
	}
	waitUntil(t, "deliveries held by handlers", func() bool { return b.Stats().Published > 200 })
	if !forceClose(t, b) {
		t.Fatal("no connection to close")
	}
	waitUntil(t, "reconnect", func() bool { return b.Stats().Reconnects == 1 && b.current() != nil })
	unhold()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Publish across the drop: %v", err)
		}
	}
	close(ids)
	want := 0
	for id := range ids {
		want++
		waitUntil(t, "event "+id, func() bool { mu.Lock(); defer mu.Unlock(); return seen[id] })
	}
	waitUntil(t, "queue drained", func() bool {
		lag, err := b.Lag(t.Context())
		return err == nil && lag[0].Messages == 0
	})
	if n := b.Stats().Reconnects; n != 1 {
		t.Errorf("%d reconnects after one drop; want 1 (a settlement on the wrong channel?)", n)
	}
	t.Logf("%d events delivered; stats %+v", want, b.Stats())
}

// The group's queue is deleted under a running consumer (the broker
// cancels it): the bus declares it again and consumes what follows.
func TestQueueDeletedWhileConsuming(t *testing.T) {
	b, rec := startReconnecting(t)
	defer closeBus(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := b.Publish(ctx, bustest.NewEnvelope("q", 1, bustest.Ping{})); err != nil {
		t.Fatal(err)
	}
	rec.WaitFor(t, 1, 10*time.Second)
	rabbitmqctl(t, "delete_queue", b.Names().Queue)
	waitUntil(t, "queue declared again", func() bool { return b.Stats().Reconnects >= 1 && b.current() != nil })
	if err := b.Publish(ctx, bustest.NewEnvelope("q", 2, bustest.Ping{})); err != nil {
		t.Fatal(err)
	}
	rec.WaitFor(t, 2, 10*time.Second)
}
