package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

const howToEnable = "start RabbitMQ and set EVENTSOURCE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ to run the RabbitMQ bus tests"

func amqpURL(t testing.TB) string { return testenv.URL(t, "EVENTSOURCE_AMQP_URL", howToEnable) }

// fastRetry keeps retrying tests short.
var fastRetry = consumer.RetryPolicy{MaxRetries: 3, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Multiplier: 2}

// cleanupTopology deletes the exchange and the queues of every group when
// the test ends (after the buses it opened are closed: cleanups run
// last-registered first).
func cleanupTopology(t testing.TB, url string, cfg Config, groups ...string) {
	t.Helper()
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer ch.Close()
		for _, g := range groups {
			c := cfg
			c.Group = g
			n := c.WithDefaults().Names()
			for _, q := range append([]string{n.Queue, n.DeadLetterQueue}, n.RetryQueues...) {
				if _, err := ch.QueueDelete(q, false, false, false); err != nil {
					t.Errorf("cleanup: delete queue %s: %v", q, err)
					return
				}
			}
		}
		if err := ch.ExchangeDelete(cfg.WithDefaults().Exchange, false, false); err != nil {
			t.Errorf("cleanup: delete exchange: %v", err)
		}
	})
}

func open(t testing.TB, cfg Config) *Bus {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = amqpURL(t)
	}
	if cfg.Retry == (consumer.RetryPolicy{}) {
		cfg.Retry = fastRetry
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func exchange() string { return "rt-" + uuid.NewString()[:8] }

// publishRaw publishes msg as a producer without the bus would (the
// default exchange, "", routes by queue name), and waits for the
// broker's confirmation.
func publishRaw(t *testing.T, url, exchange, key string, msg amqp.Publishing) {
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
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msg)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := conf.WaitContext(ctx); !ok || err != nil {
		t.Fatalf("raw publish not confirmed: %v, %v", ok, err)
	}
}

func TestConformance(t *testing.T) {
	url := amqpURL(t)
	// Persistence is not declared: a group's queue exists from its first
	// subscription, so a new group does not see earlier events.
	bustest.Run(t, bustest.Features{ConsumerGroups: true, OrderingPerAggregate: true, MaxEventBytes: 1 << 20},
		func(t *testing.T, cfg bustest.Config) bus.Bus {
			c := Config{URL: url, Registry: cfg.Registry, Exchange: cfg.Namespace, Retry: fastRetry, MaxMessageSize: 1 << 20}
			cleanupTopology(t, url, c, "default", "group-a", "group-b", "publisher", "late-group")
			c.Group = cfg.Group
			return open(t, c)
		})
}

func closeBus(t testing.TB, b *Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

type dotted struct{}

func (dotted) EventType() string { return "order.placed" }

type starred struct{}

func (starred) EventType() string { return "Order*" }

func TestConfigValidateRedactsPassword(t *testing.T) {
	cfg := Config{URL: "amqp://user:s3cret@localhost:5672/"}.WithDefaults()
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Validate without Registry = %v, want ErrInvalidConfig", err)
	}
	for _, bad := range []string{"amqp://user:s3cret@local host:5672", "http://user:s3cret@localhost", "amqp://user:s3cret@localhost:notaport/"} {
		err := Config{URL: bad, Registry: eventsource.NewRegistry()}.WithDefaults().Validate()
		if err == nil {
			t.Errorf("%s validated", strings.ReplaceAll(bad, "s3cret", "…"))
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
	if got := cfg.RedactedURL(); strings.Contains(got, "s3cret") || !strings.Contains(got, "localhost:5672") {
		t.Errorf("RedactedURL = %q", got)
	}
	def := Config{URL: "amqp://localhost", Registry: eventsource.NewRegistry()}.WithDefaults()
	if err := def.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	if def.ExchangeType != "topic" || def.Prefetch != 1024 || def.Transient || def.ConfirmWindow != 4096 || def.PublishChannels != 4 {
		t.Errorf("defaults %+v", def)
	}
	for _, bad := range []Config{
		{ExchangeType: "fanout"}, {Prefetch: 70000}, {QuorumQueues: true, Transient: true},
		{ConfirmWindow: -1}, {ReconnectMin: time.Second, ReconnectMax: time.Millisecond}, {Group: "amq.x"},
		{PublishChannels: -1}, {PublishChannels: 65},
	} {
		bad.URL, bad.Registry = "amqp://localhost", eventsource.NewRegistry()
		if err := bad.WithDefaults().Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v validated: %v", bad, err)
		}
	}
	ctx := context.Background()
	if _, err := New(ctx, Config{URL: "amqp://user:s3cret@127.0.0.1:1/", Registry: eventsource.NewRegistry()}); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("New against a closed port = %v; want an error without the password", err)
	}
	if s := fmt.Sprint(slog.AnyValue(cfg).Resolve()); strings.Contains(s, "s3cret") {
		t.Errorf("LogValue shows the password: %s", s)
	}
}

func TestTypeNamesRejectedAtRegistration(t *testing.T) {
	url := amqpURL(t)
	for _, name := range []string{"", "a.b", "a*", "#"} {
		if err := ValidateTypeName(name); !errors.Is(err, eventsource.ErrInvalidEvent) {
			t.Errorf("ValidateTypeName(%q) = %v", name, err)
		}
	}
	reg := bustest.NewRegistry()
	cfg := Config{URL: url, Registry: reg, Exchange: exchange()}
	cleanupTopology(t, url, cfg, "default")
	b := open(t, cfg)
	defer closeBus(t, b)
	if err := eventsource.Register[dotted](reg); !errors.Is(err, eventsource.ErrInvalidEvent) || !strings.Contains(err.Error(), "order.placed") {
		t.Errorf("registering a dotted name = %v", err)
	}
	if err := eventsource.Register[starred](reg); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("registering a starred name = %v", err)
	}
	if _, err := b.Subscribe("a.b", bustest.NewRecorder()); !errors.Is(err, bus.ErrInvalidSubscription) {
		t.Errorf("Subscribe(a.b) = %v", err)
	}
	bad := eventsource.NewRegistry()
	eventsource.MustRegister[dotted](bad)
	if _, err := New(context.Background(), Config{URL: url, Registry: bad}); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("New with a registry holding a dotted name = %v", err)
	}
	dot := bustest.NewEnvelope("x", 1, bustest.Ping{})
	dot.AggregateType = "a.b"
	if err := b.Publish(context.Background(), dot); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("Publish with a dotted aggregate type = %v", err)
	}
}

// Publishing a type no queue is bound for fails with ErrUnroutable; with
// AllowUnroutable it does not.
func TestUnroutableIsAnError(t *testing.T) {
	url := amqpURL(t)
	cfg := Config{URL: url, Registry: bustest.NewRegistry(), Exchange: exchange()}
	cleanupTopology(t, url, cfg, "default")
	b := open(t, cfg)
	defer closeBus(t, b)
	if _, err := b.Subscribe("BustestPing", bustest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	ctx := context.Background()
	err := b.Publish(ctx, bustest.NewEnvelope("u", 1, bustest.Ping{}), bustest.NewEnvelope("u", 2, bustest.Pong{}))
	var perr *PublishError
	if !errors.Is(err, ErrUnroutable) || !errors.As(err, &perr) || perr.Confirmed != 1 || len(perr.Failed) != 1 || perr.Failed[0].Index != 1 {
		t.Fatalf("Publish of an unbound type = %v", err)
	}
	if st := b.Stats(); st.Published != 1 {
		t.Errorf("published %d, want 1", st.Published)
	}
	cfg.AllowUnroutable = true
	loose := open(t, cfg)
	defer closeBus(t, loose)
	if err := loose.Publish(ctx, bustest.NewEnvelope("u", 3, bustest.Pong{})); err != nil {
		t.Errorf("AllowUnroutable: %v", err)
	}
}

// TestDeadLetters runs the shared dead-letter suite. Retries go through
// the delay queues, so the failing group's bus reads the event once per
// attempt and once more replayed.
func TestDeadLetters(t *testing.T) {
	url := amqpURL(t)
	bustest.RunDeadLetters(t, bustest.DeadLetterOptions{
		Check: func(t *testing.T, r bustest.DeadLetterResult) {
			if q := r.Bus.(*Bus).names.Queue; r.Record.Source != q {
				t.Errorf("record source %q, want the group's queue %q", r.Record.Source, q)
			}
			if want := uint64(r.Config.MaxRetries + 1); r.Stats.Received != want {
				t.Errorf("Stats.Received = %d, want %d", r.Stats.Received, want)
			}
		},
		// The routing key is what the group is bound to; the header is the
		// copy a producer can get wrong.
		Inject: func(t *testing.T, cfg bustest.Config, body []byte, typeField, key string) {
			publishRaw(t, url, cfg.Namespace, "BustestAgg.BustestPing",
				amqp.Publishing{Headers: amqp.Table{hEventType: typeField, hAggID: key}, Body: body})
		},
	}, func(t *testing.T, cfg bustest.Config) bustest.DeadLetterBus {
		c := Config{URL: url, Registry: cfg.Registry, Exchange: cfg.Namespace, Group: cfg.Group, Retry: fastRetry}
		if cfg.MaxRetries > 0 {
			c.Retry.MaxRetries = cfg.MaxRetries
		}
		cleanupTopology(t, url, c, cfg.Group)
		return open(t, c)
	})
}

// Bindings follow subscriptions: after the last Ping subscription goes,
// Ping is unroutable again; the group's queue gets what a wildcard wants.
func TestBindingsFollowSubscriptions(t *testing.T) {
	url := amqpURL(t)
	cfg := Config{URL: url, Registry: bustest.NewRegistry(), Exchange: exchange()}
	cleanupTopology(t, url, cfg, "default")
	b := open(t, cfg)
	defer closeBus(t, b)
	ctx := context.Background()
	r1, r2 := bustest.NewRecorder(), bustest.NewRecorder()
	s1, err := b.Subscribe("BustestPing", r1)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := bus.SubscribeProjection(b, projection{r2, []string{"BustestPing", "BustestPong"}})
	if err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	if err := b.Publish(ctx, bustest.NewEnvelope("b", 1, bustest.Ping{}), bustest.NewEnvelope("b", 2, bustest.Pong{})); err != nil {
		t.Fatal(err)
	}
	r2.WaitFor(t, 2, 10*time.Second)
	if err := s1.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, bustest.NewEnvelope("b", 3, bustest.Ping{})); err != nil {
		t.Fatalf("Ping still wanted by the projection: %v", err)
	}
	if err := s2.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, bustest.NewEnvelope("b", 4, bustest.Ping{})); !errors.Is(err, ErrUnroutable) {
		t.Errorf("Publish after every Ping subscription left = %v, want ErrUnroutable", err)
	}
	all := bustest.NewRecorder()
	if _, err := b.SubscribeAll(all); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	if err := b.Publish(ctx, bustest.NewEnvelope("b", 5, bustest.Other{})); err != nil {
		t.Fatal(err)
	}
	all.WaitFor(t, 1, 10*time.Second)
}

type projection struct {
	*bustest.Recorder
	types []string
}

func (p projection) EventTypes() []string { return p.types }

// startReconnecting opens a bus on a fresh exchange that reconnects at
// once, with one recorder subscribed to everything, and starts it; its
// topology is deleted when t ends.
func startReconnecting(t *testing.T) (*Bus, *bustest.Recorder) {
	t.Helper()
	url := amqpURL(t)
	cfg := Config{URL: url, Registry: bustest.NewRegistry(), Exchange: exchange(), ReconnectMin: 10 * time.Millisecond}
	cleanupTopology(t, url, cfg, "default")
	b := open(t, cfg)
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(rec); err != nil {
		closeBus(t, b)
		t.Fatal(err)
	}
	bustest.Start(t, b)
	return b, rec
}

// The connection is closed by the broker side (here: forced by closing it
// under the bus); the bus reconnects, redeclares and goes on consuming.
func TestReconnectsAfterConnectionLoss(t *testing.T) {
	b, rec := startReconnecting(t)
	defer closeBus(t, b)
	ctx := context.Background()
	if err := b.Publish(ctx, bustest.NewEnvelope("r", 1, bustest.Ping{})); err != nil {
		t.Fatal(err)
	}
	rec.WaitFor(t, 1, 10*time.Second)
	for i := range 3 {
		s := b.current()
		_ = s.conn.Close() // as if the broker went away
		waitUntil(t, "reconnect", func() bool { return b.Stats().Reconnects == uint64(i+1) && b.current() != nil })
		if err := b.Publish(ctx, bustest.NewEnvelope("r", int64(i+2), bustest.Ping{})); err != nil {
			t.Fatal(err)
		}
		rec.WaitFor(t, i+2, 10*time.Second)
	}
}
