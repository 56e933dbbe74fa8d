package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/testcontainers/testcontainers-go"
	tcrabbit "github.com/testcontainers/testcontainers-go/modules/rabbitmq"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
	rabbitbus "github.com/eventsource-go/eventsource/bus/rabbitmq"
)

func init() {
	// The harness runs child processes by name; this file brings its own.
	helpers["rabbitmq-consumer"] = rabbitConsumerHelper
}

// rabbit is the RabbitMQ the tests share when none is given: a container,
// terminated by TestMain with the others.
var rabbit struct {
	once sync.Once
	url  string
	err  string
}

// amqpURL returns the RabbitMQ to test against: EVENTSOURCE_AMQP_URL, or a
// container when a Docker engine answers. Otherwise the test is skipped,
// or fails under EVENTSOURCE_REQUIRE_BROKERS=1.
func amqpURL(t *testing.T) string {
	t.Helper()
	if u := os.Getenv("EVENTSOURCE_AMQP_URL"); u != "" {
		return u
	}
	rabbit.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := dockerPing(ctx); err != nil {
			rabbit.err = "no Docker engine answered (" + err.Error() + ")"
			return
		}
		ctx, cancel = context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		ctr, err := tcrabbit.Run(ctx, "rabbitmq:3.13-alpine")
		if err != nil {
			rabbit.err = "starting a RabbitMQ container failed: " + err.Error()
			return
		}
		brokers.onTerminate(func() { _ = testcontainers.TerminateContainer(ctr) })
		rabbit.url, err = ctr.AmqpURL(ctx)
		if err != nil {
			rabbit.err = "RabbitMQ container has no address: " + err.Error()
		}
	})
	if rabbit.url == "" {
		unavailable(t, "EVENTSOURCE_AMQP_URL is not set and "+rabbit.err+
			"; set EVENTSOURCE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ or start Docker to run the RabbitMQ integration tests")
	}
	return rabbit.url
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

var rabbitRetry = consumer.RetryPolicy{MaxRetries: 4, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Multiplier: 2}

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
	a1, a2 := env.open(t, rabbitbus.Config{Group: "a"}), env.open(t, rabbitbus.Config{Group: "a"})
	bb := env.open(t, rabbitbus.Config{Group: "b"})
	ca1, ca2, cb := newCounter(), newCounter(), newCounter()
	for _, x := range []struct {
		b *rabbitbus.Bus
		c *counter
	}{{a1, ca1}, {a2, ca2}, {bb, cb}} {
		if _, err := x.b.SubscribeAll(x.c); err != nil {
			t.Fatal(err)
		}
	}
	const n = 10_000
	evs := events(n, 100, "share")
	publishAll(t, a1, evs, 200)
	waitFor(t, time.Minute, "both groups to handle 10,000", func() bool {
		t1, _, _ := ca1.counts()
		t2, _, _ := ca2.counts()
		tb, _, _ := cb.counts()
		return t1+t2 >= n && tb >= n
	})
	for _, b := range []*rabbitbus.Bus{a1, a2, bb} {
		closeBus(t, b)
	}
	assertExactlyOnce(t, "group a (two members)", evs, mergeSeen(ca1, ca2))
	assertExactlyOnce(t, "group b", evs, mergeSeen(cb))
	t1, _, _ := ca1.counts()
	t2, _, _ := ca2.counts()
	t.Logf("group a split: %d + %d", t1, t2)
	if t1 == 0 || t2 == 0 {
		t.Errorf("one member of group a handled nothing (%d, %d): the group did not share", t1, t2)
	}
	if st := a1.Stats(); st.Published != n {
		t.Errorf("published %d", st.Published)
	}
	if h := a1.Stats().Handled + a2.Stats().Handled; h != n {
		t.Errorf("group a acked %d, want %d", h, n)
	}
	if h := bb.Stats().Handled; h != n {
		t.Errorf("group b acked %d, want %d", h, n)
	}
	for _, g := range []string{"a", "b"} {
		if ready, _, _ := env.queue(env.config(g).Names().Queue); ready != 0 {
			t.Errorf("group %s: %d messages left in its queue", g, ready)
		}
	}
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

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=rabbitmq-consumer",
		"HELPER_AMQP_URL="+env.url, "HELPER_EXCHANGE="+env.exchange, "HELPER_GROUP=workers")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
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
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed = true

	survivor := env.open(t, rabbitbus.Config{Group: "workers"})
	c := newCounter()
	if _, err := survivor.SubscribeAll(c); err != nil {
		t.Fatal(err)
	}
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
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	block := make(chan struct{})
	if _, err := b.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		<-block
		return nil
	})); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	<-block // until SIGKILL
	return 0
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
	if _, err := sub.SubscribeAll(c); err != nil {
		t.Fatal(err)
	}
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
	for _, at := range []int{300, 1200, 2100} {
		waitFor(t, time.Minute, fmt.Sprintf("%d events handled before cut", at), func() bool { _, d, _ := c.counts(); return d >= at })
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
	seen := mergeSeen(c)
	lost := 0
	for _, e := range evs {
		if seen[e.ID] == 0 {
			lost++
		}
	}
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
	const maxRetries, n = 4, 10
	b := env.open(t, rabbitbus.Config{Group: "billing"})
	other := env.open(t, rabbitbus.Config{Group: "audit"})
	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	attempts := map[uuid.UUID]int{}
	c := newCounter()
	c.fail = func(e eventsource.Envelope) error {
		mu.Lock()
		attempts[e.ID]++
		mu.Unlock()
		if broken.Load() {
			return errors.New("payment provider down")
		}
		return nil
	}
	audit := newCounter()
	if _, err := b.SubscribeAll(c, bus.WithName("charge")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.SubscribeAll(audit); err != nil {
		t.Fatal(err)
	}
	evs := events(n, 3, "dl")
	publishAll(t, b, evs, n)
	admin := b.DeadLetters()
	ctx := context.Background()
	waitFor(t, 30*time.Second, "every event dead-lettered", func() bool { k, _ := admin.Count(ctx); return k == n })
	waitFor(t, 30*time.Second, "audit to handle its copies", func() bool { tot, _, _ := audit.counts(); return tot >= n })
	mu.Lock()
	for _, e := range evs {
		if attempts[e.ID] != maxRetries {
			t.Errorf("event %s attempted %d times before dead-lettering, want %d", e.ID, attempts[e.ID], maxRetries)
		}
	}
	mu.Unlock()
	recs, err := admin.List(ctx, "", 100)
	if err != nil || len(recs) != n {
		t.Fatalf("List = %d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if r.Reason != consumer.ReasonMaxRetries || r.Attempts != maxRetries || r.Group != "billing" ||
			r.Error == "" || len(r.Body) == 0 || len(r.Handlers) != 1 || r.Handlers[0] != "charge" {
			t.Errorf("record %+v", r)
		}
	}
	if k, _ := other.DeadLetters().Count(ctx); k != 0 {
		t.Errorf("audit group has %d dead letters", k)
	}
	if tot, _, _ := audit.counts(); tot != n {
		t.Errorf("audit handled %d, want %d: the retries reached the other group", tot, n)
	}

	broken.Store(false)
	if k, err := admin.ReplayAll(ctx); err != nil || k != n {
		t.Fatalf("ReplayAll = %d, %v", k, err)
	}
	waitFor(t, 30*time.Second, "replayed events handled", func() bool { tot, _, _ := c.counts(); return tot >= n })
	closeBus(t, b)
	closeBus(t, other)
	assertExactlyOnce(t, "billing after replay", evs, mergeSeen(c))
	assertExactlyOnce(t, "audit (not replayed to)", evs, mergeSeen(audit))
	if ready, _, _ := env.queue(env.config("billing").Names().DeadLetterQueue); ready != 0 {
		t.Errorf("%d dead letters left after replay", ready)
	}
	if st := b.Stats(); st.DeadLettered != n || st.Retries != n*(maxRetries-1) || st.Handled != n {
		t.Errorf("stats dead %d retries %d handled %d; want %d, %d, %d", st.DeadLettered, st.Retries, st.Handled, n, n*(maxRetries-1), n)
	}
	if st := other.Stats(); st.Received != n || st.Retries != 0 {
		t.Errorf("audit received %d, retries %d; want %d, 0", st.Received, st.Retries, n)
	}
}

// Scenario 5: garbage bytes, an unknown event type and an empty body,
// published by hand, are dead-lettered with the right reason; the good
// events around them are handled.
func TestRabbitBadInputDeadLettered(t *testing.T) {
	env := newRabbitEnv(t, amqpURL(t))
	b := env.open(t, rabbitbus.Config{Group: "g"})
	c := newCounter()
	if _, err := b.SubscribeAll(c); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first := events(1, 1, "good")
	publishAll(t, b, first, 1)
	ch, err := env.raw.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	unknownID := uuid.Must(uuid.NewV7()).String()
	garbage := "\x00\xffnot an envelope{"
	raw := []amqp.Publishing{
		{MessageId: "raw-garbage", Body: []byte(garbage)},
		{MessageId: "raw-unknown", Headers: amqp.Table{"es-event-type": "NoSuchType", "es-aggregate-id": "x"},
			Body: []byte(`{"id":"` + unknownID + `","type":"NoSuchType","aggregate_id":"x","version":1,"occurred_at":"2026-01-01T00:00:00Z","data":{"a":1}}`)},
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
	next := bustest.NewEnvelope("good-0", 2, bustest.Ping{N: 2})
	publishAll(t, b, []eventsource.Envelope{next}, 1)
	admin := b.DeadLetters()
	waitFor(t, 30*time.Second, "three dead letters and two good events", func() bool {
		k, _ := admin.Count(ctx)
		tot, _, _ := c.counts()
		return k == 3 && tot == 2
	})
	recs, err := admin.List(ctx, "", 10)
	if err != nil || len(recs) != 3 {
		t.Fatalf("List = %v, %v", recs, err)
	}
	bySource := map[string]consumer.DeadLetter{}
	for _, r := range recs {
		bySource[r.SourceID] = r
	}
	for id, want := range map[string]consumer.Reason{
		"raw-garbage": consumer.ReasonMalformed, "raw-unknown": consumer.ReasonUnknownType, "raw-empty": consumer.ReasonMalformed,
	} {
		if r := bySource[id]; r.Reason != want || r.Error == "" || r.Group != "g" {
			t.Errorf("%s: reason %q, want %q (%+v)", id, r.Reason, want, r)
		}
	}
	if r := bySource["raw-garbage"]; string(r.Body) != garbage {
		t.Errorf("garbage bytes not kept: %q", r.Body)
	}
	if r := bySource["raw-unknown"]; r.EventType != "NoSuchType" || r.AggregateID != "x" {
		t.Errorf("unknown-type record %+v", r)
	}
	closeBus(t, b)
	assertExactlyOnce(t, "good events", append(first, next), mergeSeen(c))
	if st := b.Stats(); st.DeadLettered != 3 || st.Handled != 2 || st.Received != 5 {
		t.Errorf("stats dead %d handled %d received %d; want 3, 2, 5", st.DeadLettered, st.Handled, st.Received)
	}
}
