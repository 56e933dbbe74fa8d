package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
	rabbitbus "github.com/eventsource-go/eventsource/bus/rabbitmq"
)

func init() {
	// The harness runs child processes by name; this file brings its own.
	helpers["rabbitmq-consumer"] = rabbitConsumerHelper
}

type rabbitEnv struct {
	url      string
	exchange string
	groups   map[string]bool
	mu       sync.Mutex
	raw      *amqp.Connection
}

// newRabbitEnv gives a test a unique exchange; the exchange and the queues
// of every group opened through it are deleted when the test ends.
func newRabbitEnv(t *testing.T, url string) *rabbitEnv {
	t.Helper()
	raw, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	e := &rabbitEnv{url: url, exchange: uniquePrefix(t), groups: map[string]bool{}, raw: raw}
	t.Cleanup(func() {
		defer raw.Close()
		ch, err := raw.Channel()
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer ch.Close()
		e.mu.Lock()
		defer e.mu.Unlock()
		for g := range e.groups {
			n := e.config(g).Names()
			for _, q := range append([]string{n.Queue, n.DeadLetterQueue}, n.RetryQueues...) {
				if _, err := ch.QueueDelete(q, false, false, false); err != nil {
					t.Errorf("cleanup: delete %s: %v", q, err)
				}
			}
		}
		if err := ch.ExchangeDelete(e.exchange, false, false); err != nil {
			t.Errorf("cleanup: delete exchange %s: %v", e.exchange, err)
		}
	})
	return e
}

// config is what the names of group's queues derive from; every bus of a
// group uses the same MaxRetries so that cleanup finds its delay queues.
func (e *rabbitEnv) config(group string) rabbitbus.Config {
	return rabbitbus.Config{URL: e.url, Exchange: e.exchange, Group: group, Retry: rabbitRetry}.WithDefaults()
}

var rabbitRetry = scenarioRetry

func (e *rabbitEnv) open(t *testing.T, cfg rabbitbus.Config) *rabbitbus.Bus {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = e.url
	}
	cfg.Exchange = e.exchange
	if cfg.Group == "" {
		cfg.Group = "default"
	}
	if cfg.Registry == nil {
		cfg.Registry = bustest.NewRegistry()
	}
	if cfg.Retry == (consumer.RetryPolicy{}) {
		cfg.Retry = rabbitRetry
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e.mu.Lock()
	e.groups[cfg.Group] = true
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := rabbitbus.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBus(t, b) })
	return b
}

// queue reports a queue's ready messages and consumers; ok is false while
// it does not exist.
func (e *rabbitEnv) queue(name string) (ready, consumers int, ok bool) {
	ch, err := e.raw.Channel()
	if err != nil {
		return 0, 0, false
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
	if err != nil {
		return 0, 0, false
	}
	return q.Messages, q.Consumers, true
}

// Scenario 1: two members of one group share 10,000 events, each handled
// once in total; a second group gets all 10,000.
func TestRabbitGroupsShareTenThousand(t *testing.T) {
	env := newRabbitEnv(t, amqpURL(t))
	groupsShareTenThousand(t, func(group string) brokerBus { return env.open(t, rabbitbus.Config{Group: group}) },
		func(_, _, bb brokerBus) {
			if h := bb.Stats().Handled; h != 10_000 {
				t.Errorf("group b acked %d, want %d", h, 10_000)
			}
			for _, g := range []string{"a", "b"} {
				if ready, _, _ := env.queue(env.config(g).Names().Queue); ready != 0 {
					t.Errorf("group %s: %d messages left in its queue", g, ready)
				}
			}
		})
}

// Scenario 2: a consumer process killed (SIGKILL) holding unacked
// deliveries; the broker redelivers them to the surviving member, which
// handles each once.
func TestRabbitKilledConsumerRedelivered(t *testing.T) {
	env := newRabbitEnv(t, amqpURL(t))
	queue := env.config("workers").Names().Queue
	env.mu.Lock()
	env.groups["workers"] = true
	env.mu.Unlock()

	cmd := helperCmd("rabbitmq-consumer", "HELPER_AMQP_URL="+env.url, "HELPER_EXCHANGE="+env.exchange, "HELPER_GROUP=workers")
	cmd.Stdout = os.Stderr
	kill := startHelper(t, cmd)
	waitFor(t, 30*time.Second, "the doomed consumer to subscribe", func() bool {
		_, consumers, ok := env.queue(queue)
		return ok && consumers == 1
	})
	pub := env.open(t, rabbitbus.Config{Group: "publisher"})
	const n = 300
	evs := events(n, 10, "kill")
	publishAll(t, pub, evs, 100)
	waitFor(t, 30*time.Second, "the doomed consumer to hold every event unacked", func() bool {
		ready, _, ok := env.queue(queue)
		return ok && ready == 0
	})
	kill()

	survivor := env.open(t, rabbitbus.Config{Group: "workers"})
	c := newCounter()
	subscribe(t, survivor, c)
	waitFor(t, 30*time.Second, "the survivor to handle every event", func() bool { tot, _, _ := c.counts(); return tot >= n })
	closeBus(t, survivor)
	assertExactlyOnce(t, "survivor", evs, mergeSeen(c))
	st := survivor.Stats()
	if st.Received != n || st.Handled != n || st.DeadLettered != 0 || st.Retries != 0 {
		t.Errorf("received %d handled %d dead %d retries %d; want %d, %d, 0, 0", st.Received, st.Handled, st.DeadLettered, st.Retries, n, n)
	}
	if ready, _, _ := env.queue(queue); ready != 0 {
		t.Errorf("%d messages left in the queue", ready)
	}
}

// rabbitConsumerHelper is the child process of the kill scenario: it takes
// deliveries and never acknowledges them, its handlers blocking until it
// is killed.
func rabbitConsumerHelper() int {
	ctx := context.Background()
	b, err := rabbitbus.New(ctx, rabbitbus.Config{
		URL: os.Getenv("HELPER_AMQP_URL"), Exchange: os.Getenv("HELPER_EXCHANGE"), Group: os.Getenv("HELPER_GROUP"),
		Registry: bustest.NewRegistry(), Retry: rabbitRetry, Logger: slog.New(slog.DiscardHandler),
	})
	return holdDeliveries(b, err)
}

// Scenario 3: every connection between the buses and RabbitMQ is cut
// (through a fault-injecting proxy) several times while events are
// published and consumed. Publish calls ride through the cuts by
// themselves, consuming resumes, and every confirmed event is handled.
func TestRabbitConnectionsCutMidStream(t *testing.T) {
	base := amqpURL(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startFaultProxy(t, u.Host)
	u.Host = proxy.addr()
	env := newRabbitEnv(t, base)
	fast := rabbitbus.Config{URL: u.String(), ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond, Heartbeat: time.Second}
	consumerCfg := fast
	consumerCfg.Group = "g"
	sub := env.open(t, consumerCfg)
	c := newCounter()
	subscribe(t, sub, c)
	pubCfg := fast
	pubCfg.Group = "publisher"
	pub := env.open(t, pubCfg)

	const n, batch = 3000, 50
	evs := events(n, 20, "cut")
	published := make(chan error, 1)
	var confirmed atomic.Int64
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for start := 0; start < n; start += batch {
			if err := pub.Publish(ctx, evs[start:start+batch]...); err != nil {
				published <- fmt.Errorf("publish of events %d…: %w", start, err)
				return
			}
			confirmed.Add(batch)
		}
		published <- nil
	}()
	var publishErr error
	publishFailed := func() bool {
		select {
		case publishErr = <-published:
			published <- publishErr // for the wait at the end
			return publishErr != nil
		default:
			return false
		}
	}
	for _, at := range []int{300, 1200, 2100} {
		// A publish that fails stops the handled count; say so, not a timeout.
		waitFor(t, time.Minute, fmt.Sprintf("%d events handled before cut", at), func() bool {
			if publishFailed() {
				t.Fatalf("after %d confirmed: %v", confirmed.Load(), publishErr)
			}
			_, d, _ := c.counts()
			return d >= at
		})
		if k := proxy.cut(); k == 0 {
			t.Fatalf("cut found no connection")
		}
	}
	select {
	case err := <-published:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("publishing stalled after %d confirmed", confirmed.Load())
	}
	waitFor(t, time.Minute, "every event handled", func() bool { _, d, _ := c.counts(); return d >= n })
	closeBus(t, sub)
	closeBus(t, pub)
	_, distinct, dups := c.counts()
	t.Logf("published %d, handled %d distinct, %d duplicate deliveries; reconnects: consumer %d, publisher %d",
		n, distinct, dups, sub.Stats().Reconnects, pub.Stats().Reconnects)
	lost := countLost(c, evs)
	if lost != 0 || distinct != n {
		t.Errorf("%d events lost, %d distinct of %d", lost, distinct, n)
	}
	if sub.Stats().Reconnects < 3 || pub.Stats().Reconnects < 3 {
		t.Errorf("reconnects: consumer %d, publisher %d; want at least 3 each", sub.Stats().Reconnects, pub.Stats().Reconnects)
	}
	if ready, _, _ := env.queue(env.config("g").Names().Queue); ready != 0 {
		t.Errorf("%d messages left in the queue", ready)
	}
}

// Scenario 4: a handler that always fails. Each event reaches the group's
// dead-letter queue after exactly MaxRetries attempts, with the reason;
// the other group is not affected; once the handler is fixed, replay
// delivers each once, to that group only.
func TestRabbitDeadLetterAfterMaxRetriesThenReplay(t *testing.T) {
	env := newRabbitEnv(t, amqpURL(t))
	n, maxRetries := uint64(10), uint64(rabbitRetry.MaxRetries)
	deadLetterThenReplay(t, deadLetterCase{
		open:            func(group string) brokerBus { return env.open(t, rabbitbus.Config{Group: group}) },
		recordsHandlers: true,
		left: func(context.Context) int64 {
			ready, _, _ := env.queue(env.config("billing").Names().DeadLetterQueue)
			return int64(ready)
		},
		more: func(b, other brokerBus) {
			if st := b.Stats(); st.DeadLettered != n || st.Retries != n*(maxRetries-1) || st.Handled != n {
				t.Errorf("stats dead %d retries %d handled %d; want %d, %d, %d", st.DeadLettered, st.Retries, st.Handled, n, n*(maxRetries-1), n)
			}
			if st := other.Stats(); st.Received != n || st.Retries != 0 {
				t.Errorf("audit received %d, retries %d; want %d, 0", st.Received, st.Retries, n)
			}
		},
	})
}

// Scenario 5: garbage bytes, an unknown event type and an empty body,
// published by hand, are dead-lettered with the right reason; the good
// events around them are handled.
func TestRabbitBadInputDeadLettered(t *testing.T) {
	env := newRabbitEnv(t, amqpURL(t))
	badInputDeadLettered(t, badInputCase{
		open: func() brokerBus { return env.open(t, rabbitbus.Config{Group: "g"}) },
		inject: func(ctx context.Context, unknownID string) [3]string {
			ch, err := env.raw.Channel()
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			if err := ch.Confirm(false); err != nil {
				t.Fatal(err)
			}
			raw := []amqp.Publishing{
				{MessageId: "raw-garbage", Body: []byte(garbageBytes)},
				{MessageId: "raw-unknown", Headers: amqp.Table{"es-event-type": "NoSuchType", "es-aggregate-id": "x"}, Body: unknownTypeBody(unknownID)},
				{MessageId: "raw-empty"},
			}
			for _, m := range raw {
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, env.exchange, "Somewhere.Something", true, false, m)
				if err != nil {
					t.Fatal(err)
				}
				if ok, err := dc.WaitContext(ctx); !ok || err != nil {
					t.Fatalf("raw publish not confirmed: %v", err)
				}
			}
			return [3]string{"raw-garbage", "raw-unknown", "raw-empty"}
		},
		record: func(_ int, r consumer.DeadLetter, _ string) error {
			if r.Error == "" || r.Group != "g" {
				return errors.New("no error, or not group g")
			}
			return nil
		},
		more: func(b brokerBus) {
			if st := b.Stats(); st.Received != 5 {
				t.Errorf("stats received %d; want 5", st.Received)
			}
		},
	})
}
