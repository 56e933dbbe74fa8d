package rabbitmq

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// TestNamesAppliesDefaults: Names of a raw config listed no retry queues
// and an empty exchange, unlike the Kafka bus's Config.Topics.
func TestNamesAppliesDefaults(t *testing.T) {
	got := Config{}.Names()
	want := Config{}.WithDefaults().Names()
	if got.Exchange != "eventsource" || got.Queue != "eventsource.default" || got.DeadLetterQueue != "eventsource.default.dlq" {
		t.Errorf("Names of a raw config = %+v", got)
	}
	if n := consumer.DefaultRetryPolicy().MaxRetries - 1; len(got.RetryQueues) != n || !slices.Equal(got.RetryQueues, want.RetryQueues) {
		t.Errorf("retry queues of a raw config %q, want %d: %q", got.RetryQueues, n, want.RetryQueues)
	}
	custom := Config{Exchange: "ex", Group: "g", Retry: consumer.RetryPolicy{MaxRetries: 3}}.Names()
	if custom.Queue != "ex.g" || !slices.Equal(custom.RetryQueues, []string{"ex.g.retry.1", "ex.g.retry.2"}) {
		t.Errorf("Names = %+v", custom)
	}
}

// declareTopology declares what a bus of cfg declares, as a running group
// leaves it.
func declareTopology(t *testing.T, cfg Config) {
	t.Helper()
	conn, err := amqp.Dial(cfg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	n := cfg.Names()
	if err := ch.ExchangeDeclare(n.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, q := range append([]string{n.Queue, n.DeadLetterQueue}, n.RetryQueues...) {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.Publish("", q, false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.QueueBind(n.Queue, "#", n.Exchange, false, nil); err != nil {
		t.Fatal(err)
	}
}

// exists reports whether the broker has the queue (or the exchange).
func exists(t *testing.T, url, kind, name string) bool {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if kind == "exchange" {
		err = ch.ExchangeDeclarePassive(name, amqp.ExchangeTopic, true, false, false, false, nil)
	} else {
		_, err = ch.QueueDeclarePassive(name, true, false, false, false, nil)
	}
	if err != nil && !notFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func TestDeleteGroup(t *testing.T) {
	url := amqpURL(t)
	cfg := Config{URL: url, Registry: bustest.NewRegistry(), Exchange: exchange(), Group: "doomed"}
	other := cfg
	other.Group = "survivor"
	cleanupTopology(t, url, cfg, "doomed", "survivor")
	declareTopology(t, cfg)
	declareTopology(t, other)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if err := DeleteGroup(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	n := cfg.Names()
	for _, q := range append([]string{n.Queue, n.DeadLetterQueue}, n.RetryQueues...) {
		if exists(t, url, "queue", q) {
			t.Errorf("queue %s left", q)
		}
	}
	if !exists(t, url, "exchange", n.Exchange) {
		t.Error("the exchange was deleted without IncludeExchange")
	}
	if o := other.Names(); !exists(t, url, "queue", o.Queue) || !exists(t, url, "queue", o.DeadLetterQueue) {
		t.Error("another group's queues were deleted")
	}

	if err := DeleteGroup(ctx, cfg, IncludeExchange()); err != nil {
		t.Fatalf("DeleteGroup of a deleted group: %v", err)
	}
	if exists(t, url, "exchange", n.Exchange) {
		t.Error("IncludeExchange left the exchange")
	}
	if err := DeleteGroup(ctx, other); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteGroupReturnsByContextDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := DeleteGroup(ctx, Config{URL: "amqp://guest:guest@" + silentServer(t) + "/"})
	if took := time.Since(start); took > 500*time.Millisecond+slack {
		t.Errorf("DeleteGroup took %v with a 500ms ctx", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DeleteGroup against a silent server = %v", err)
	}
	if err := DeleteGroup(context.Background(), Config{URL: "http://x"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("DeleteGroup with a bad URL = %v", err)
	}
}

// TestPublishErrorUnwrapsToEachCause: errors.Is and errors.As reach the
// causes of a *PublishError's failures.
func TestPublishErrorUnwrapsToEachCause(t *testing.T) {
	url := amqpURL(t)
	cfg := Config{URL: url, Registry: bustest.NewRegistry(), Exchange: exchange()}
	cleanupTopology(t, url, cfg, "default")
	b := open(t, cfg)
	defer closeBus(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := b.Publish(ctx, bustest.NewEnvelope("u", 1, bustest.Ping{}), bustest.NewEnvelope("u", 2, bustest.Ping{}))
	var perr *PublishError
	if !errors.As(err, &perr) || len(perr.Failed) != 2 {
		t.Fatalf("Publish with a cancelled ctx = %v", err)
	}
	if !errors.Is(err, ErrUnconfirmed) || !errors.Is(err, context.Canceled) {
		t.Errorf("Publish with a cancelled ctx = %v, want ErrUnconfirmed and context.Canceled", err)
	}
}
