package kafka

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go/protocol"

	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

// TestCloseHonoursContextWithBrokerStalled: a Publish is in flight when
// the broker stops answering. kafka-go cancels no request (each write
// attempt waits up to 10s for its reply) and its Writer retries on its
// own, and Writer.Close waits for all of it. Close must still return about
// when its ctx ends, with ctx's error; the Publish must fail with
// bus.ErrClosed, never report a false success; and no goroutine of the
// bus or of kafka-go may be left.
func TestCloseHonoursContextWithBrokerStalled(t *testing.T) {
	testCloseWithBrokerGone(t, brokerStalls, false)
}

// The same with the bus a member of its group (not a subtest: the leak
// check would see the parent test's goroutine).
func TestCloseHonoursContextWithBrokerStalledConsuming(t *testing.T) {
	testCloseWithBrokerGone(t, brokerStalls, true)
}

// The same with the broker down: kafka-go's writer then sleeps between
// attempts that fail at once (connection refused), where nothing can wake
// it.
func TestCloseHonoursContextWithBrokerDown(t *testing.T) {
	testCloseWithBrokerGone(t, brokerDown, false)
}

type brokerFailure int

const (
	brokerStalls brokerFailure = iota // answers nothing; its connections stay open
	brokerDown                        // its connections closed, new ones refused
)

func testCloseWithBrokerGone(t *testing.T, failure brokerFailure, consuming bool) {
	proxy := newKafkaProxy(t, brokers(t)[0])
	// A group of its own: the member cut off at Close stays in its group
	// until its session expires, and would hold up the next test's join.
	topic, group := uniqueTopic("kt-gone"), uniqueTopic("g")
	// Deleted through the brokers themselves: the proxy is gone by then.
	cleanupTopics(t, testConfig(t, Config{Topic: topic, Group: group}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var logs testenv.Buffer
	b, err := New(ctx, testConfig(t, Config{Brokers: []string{proxy.addr()}, Topic: topic, Group: group, Partitions: 1,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	t.Cleanup(func() {
		select {
		case <-closed:
		default: // the test failed before its Close
			proxy.close()
			_ = b.Close(context.Background())
		}
	})
	rec := bustest.NewRecorder()
	if consuming {
		if _, err := b.SubscribeAll(rec); err != nil {
			t.Fatal(err)
		}
		bustest.Start(t, b)
	}
	if err := b.Publish(ctx, bustest.NewEnvelope("a", 1, bustest.Ping{N: 1})); err != nil {
		t.Fatal(err)
	}
	if consuming {
		rec.WaitFor(t, 1, 20*time.Second)
	}

	published := make(chan error, 1)
	publish := func() { published <- b.Publish(context.Background(), bustest.NewEnvelope("a", 2, bustest.Ping{N: 2})) }
	switch failure {
	case brokerStalls:
		proxy.stall()
		go publish()
		waitUntil(t, "the write to reach the stalled broker", func() bool { return proxy.droppedRequests(protocol.Produce) > 0 })
	case brokerDown:
		proxy.close()
		go publish()
		waitUntil(t, "kafka-go to retry the write", func() bool { return strings.Contains(logs.String(), "error writing messages") })
	}

	closeCtx, cancelClose := context.WithTimeout(context.Background(), time.Second)
	defer cancelClose()
	start := time.Now()
	go func() { closed <- b.Close(closeCtx) }()
	select {
	case err := <-closed:
		closed <- err // for the cleanup
		took := time.Since(start)
		t.Logf("Close took %v", took.Round(time.Millisecond))
		if took > time.Second+slack {
			t.Errorf("Close took %v with a ctx ending after 1s", took)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close = %v, want an error matching context.DeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		// Ending the broker's connections lets kafka-go's retries
		// fail, so that the test ends.
		proxy.close()
		err := <-closed
		closed <- err
		t.Fatalf("Close with a 1s ctx still running after 5s; once the broker's connections closed it returned %v after %v",
			err, time.Since(start).Round(time.Millisecond))
	}
	select {
	case err := <-published:
		if !errors.Is(err, bus.ErrClosed) {
			t.Errorf("the Publish in flight when Close gave up returned %v, want an error matching bus.ErrClosed", err)
		}
	case <-time.After(slack):
		t.Error("the Publish in flight still runs after Close returned")
	}
	deadline := time.Now().Add(slack)
	for leaked() != "" {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left %v after Close:\n%s", slack, leaked())
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}
