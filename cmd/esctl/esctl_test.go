package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/consumer"
	kafkabus "github.com/eventsource-go/eventsource/bus/kafka"
	rabbitbus "github.com/eventsource-go/eventsource/bus/rabbitmq"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

type invoiceIssued struct {
	Customer string
	Cents    int64
}

func (invoiceIssued) EventType() string { return "EsctlInvoiceIssued" }

func registry() *eventsource.Registry {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[invoiceIssued](r)
	return r
}

var seq atomic.Int64

func unique(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), seq.Add(1))
}

// runCLI runs esctl in process and returns what it wrote and its exit code.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code = run(ctx, args, &out, &errb)
	return out.String(), errb.String(), code
}

// mustRun runs esctl and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := runCLI(t, args...)
	if code != exitOK {
		t.Fatalf("esctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// fixture is a real bus in the test process with a handler that fails
// (permanently, so events are dead-lettered at once) until told not to.
type fixture struct {
	flags   []string // esctl's flags that point at this bus and group
	bus     interface{ DeadLetters() consumer.Admin }
	publish func(ctx context.Context, envs ...eventsource.Envelope) error

	failing atomic.Bool
	mu      sync.Mutex
	handled map[string]int // aggregate ID -> successful handler runs
}

const handlerName = "billing-mailer"

func (f *fixture) handler() bus.Handler {
	return bus.HandlerFunc(func(_ context.Context, env eventsource.Envelope) error {
		if f.failing.Load() {
			return bus.Permanent(errors.New("smtp: card declined for " + env.AggregateID))
		}
		f.mu.Lock()
		f.handled[env.AggregateID]++
		f.mu.Unlock()
		return nil
	})
}

func (f *fixture) handledCount(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.handled[id]
}

func (f *fixture) count(t *testing.T) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := f.bus.DeadLetters().Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func envelope(id string) eventsource.Envelope {
	env := eventsource.NewEnvelope(invoiceIssued{Customer: "ada@example.com", Cents: 4200})
	env.AggregateType, env.AggregateID, env.Version = "Invoice", id, 1
	return env
}

type starter interface {
	Subscribe(string, bus.Handler, ...bus.SubscribeOption) (bus.Subscription, error)
	Start(context.Context) error
	Publish(context.Context, ...eventsource.Envelope) error
	Close(context.Context) error
	DeadLetters() consumer.Admin
}

func startFixture(t *testing.T, b starter, flags []string) *fixture {
	t.Helper()
	f := &fixture{flags: flags, bus: b, publish: b.Publish, handled: map[string]int{}}
	f.failing.Store(true)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("close bus: %v", err)
		}
	})
	if _, err := b.Subscribe(invoiceIssued{}.EventType(), f.handler(), bus.WithName(handlerName)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

var quiet = slog.New(slog.DiscardHandler)

func redisFixture(t *testing.T) *fixture {
	url := testenv.URL(t, "EVENTSOURCE_REDIS_URL", "set EVENTSOURCE_REDIS_URL or run redis-server on :6379")
	prefix, group := unique("esctl"), "billing"
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	raw := goredis.NewClient(opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := redisbus.DeleteKeys(ctx, raw, prefix); err != nil {
			t.Errorf("deleting keys of %s: %v", prefix, err)
		}
		_ = raw.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := redisbus.New(ctx, redisbus.Config{URL: url, Registry: registry(), StreamPrefix: prefix, Group: group,
		Block: 100 * time.Millisecond, Logger: quiet, KeepGoRedisLogger: true})
	if err != nil {
		t.Fatal(err)
	}
	return startFixture(t, b, []string{"-bus", "redis", "-redis-url", url, "-prefix", prefix, "-group", group})
}

func rabbitFixture(t *testing.T) *fixture {
	url := testenv.URL(t, "EVENTSOURCE_AMQP_URL", "set EVENTSOURCE_AMQP_URL or run RabbitMQ on :5672")
	exchange, group := unique("esctl"), "billing"
	cfg := rabbitbus.Config{URL: url, Registry: registry(), Exchange: exchange, Group: group, Logger: quiet}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := rabbitbus.DeleteGroup(ctx, cfg, rabbitbus.IncludeExchange()); err != nil {
			t.Errorf("delete group: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := rabbitbus.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return startFixture(t, b, []string{"-bus", "rabbitmq", "-amqp-url", url, "-exchange", exchange, "-group", group})
}

func kafkaFixture(t *testing.T) *fixture {
	brokers := testenv.URL(t, "EVENTSOURCE_KAFKA_BROKERS", "set EVENTSOURCE_KAFKA_BROKERS or run integration/cmd/kfake on :9092")
	topic, group := unique("esctl"), "billing"
	cfg := kafkabus.Config{Brokers: strings.Split(brokers, ","), Registry: registry(), Topic: topic, Group: group,
		CreateTopics: true, Partitions: 2, SessionTimeout: 3 * time.Second, HeartbeatInterval: 100 * time.Millisecond,
		RebalanceTimeout: 10 * time.Second, CommitInterval: 50 * time.Millisecond, Logger: quiet}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := kafkabus.DeleteTopics(ctx, cfg.WithDefaults(), cfg.WithDefaults().Topics()...); err != nil {
			t.Errorf("delete topics: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := kafkabus.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return startFixture(t, b, []string{"-bus", "kafka", "-kafka-brokers", brokers, "-topic", topic, "-group", group})
}

var fixtures = map[string]func(*testing.T) *fixture{
	"redis": redisFixture, "rabbitmq": rabbitFixture, "kafka": kafkaFixture,
}

// TestDeadLetters: dead letters produced by a failing handler are listed
// (with filters), shown with their decoded envelope, replayed one by one,
// by filter and all at once (the handler then runs), and purged by filter,
// on each broker.
func TestDeadLetters(t *testing.T) {
	for _, name := range []string{"redis", "rabbitmq", "kafka"} {
		t.Run(name, func(t *testing.T) {
			f := fixtures[name](t)
			cli := func(args ...string) []string { return append(args, f.flags...) }
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := f.publish(ctx, envelope("inv-1"), envelope("inv-2"), envelope("inv-3")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "three dead letters", func() bool { return f.count(t) == 3 })

			// list, as JSON, and filtered
			var recs []deadLetterJSON
			if err := json.Unmarshal([]byte(mustRun(t, cli("dlq", "list", "-o", "json")...)), &recs); err != nil {
				t.Fatal(err)
			}
			if len(recs) != 3 {
				t.Fatalf("dlq list: %d records, want 3: %+v", len(recs), recs)
			}
			byAgg := map[string]deadLetterJSON{}
			for _, r := range recs {
				if r.Reason != "permanent" || r.EventType != "EsctlInvoiceIssued" || r.Group != "billing" ||
					len(r.Handlers) != 1 || r.Handlers[0] != handlerName || !strings.Contains(r.Error, "card declined") {
					t.Errorf("dlq list: unexpected record %+v", r)
				}
				byAgg[r.AggregateID] = r
			}
			if err := json.Unmarshal([]byte(mustRun(t, cli("dlq", "list", "-o", "json", "-aggregate", "inv-2")...)), &recs); err != nil || len(recs) != 1 || recs[0].AggregateID != "inv-2" {
				t.Fatalf("dlq list -aggregate inv-2: %+v (%v)", recs, err)
			}
			if err := json.Unmarshal([]byte(mustRun(t, cli("dlq", "list", "-o", "json", "-reason", "max_retries")...)), &recs); err != nil || len(recs) != 0 {
				t.Fatalf("dlq list -reason max_retries: %+v (%v)", recs, err)
			}
			if err := json.Unmarshal([]byte(mustRun(t, cli("dlq", "list", "-o", "json", "-handler", handlerName, "-type", "EsctlInvoiceIssued")...)), &recs); err != nil || len(recs) != 3 {
				t.Fatalf("dlq list -handler -type: %d records (%v)", len(recs), err)
			}
			table := mustRun(t, cli("dlq", "list")...)
			if !strings.Contains(table, "REASON") || strings.Count(table, "permanent") != 3 {
				t.Errorf("dlq list table:\n%s", table)
			}

			// show: the error, the attempts and the decoded original bytes
			one := byAgg["inv-1"]
			var shown deadLetterJSON
			if err := json.Unmarshal([]byte(mustRun(t, cli("dlq", "show", one.ID, "-o", "json")...)), &shown); err != nil {
				t.Fatal(err)
			}
			if shown.ID != one.ID || shown.Attempts < 1 || !strings.Contains(compact(shown.Envelope), `"Customer":"ada@example.com"`) {
				t.Errorf("dlq show: %+v envelope %s", shown, shown.Envelope)
			}
			text := mustRun(t, cli("dlq", "show", one.ID)...)
			for _, want := range []string{"card declined for inv-1", "EsctlInvoiceIssued", `"Customer": "ada@example.com"`, handlerName} {
				if !strings.Contains(text, want) {
					t.Errorf("dlq show lacks %q:\n%s", want, text)
				}
			}

			// replay one: the handler, fixed, runs
			f.failing.Store(false)
			mustRun(t, cli("dlq", "replay", one.ID)...)
			waitFor(t, "inv-1 handled after replay", func() bool { return f.handledCount("inv-1") == 1 })
			waitFor(t, "two dead letters left", func() bool { return f.count(t) == 2 })

			// purge by filter: inv-3 only; its handler never runs
			out := mustRun(t, cli("dlq", "purge", "-aggregate", "inv-3", "-o", "json")...)
			if !strings.Contains(out, `"count": 1`) {
				t.Errorf("dlq purge -aggregate inv-3: %s", out)
			}
			waitFor(t, "one dead letter left", func() bool { return f.count(t) == 1 })

			// replay by filter
			mustRun(t, cli("dlq", "replay", "-type", "EsctlInvoiceIssued")...)
			waitFor(t, "inv-2 handled after replay", func() bool { return f.handledCount("inv-2") == 1 })
			waitFor(t, "no dead letters", func() bool { return f.count(t) == 0 })

			// replay all
			f.failing.Store(true)
			if err := f.publish(ctx, envelope("inv-4")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "inv-4 dead-lettered", func() bool { return f.count(t) == 1 })
			f.failing.Store(false)
			out = mustRun(t, cli("dlq", "replay", "-all", "-o", "json")...)
			if !strings.Contains(out, `"replayed": 1`) {
				t.Errorf("dlq replay -all: %s", out)
			}
			waitFor(t, "inv-4 handled after replay -all", func() bool { return f.handledCount("inv-4") == 1 })
			if n := f.handledCount("inv-3"); n != 0 {
				t.Errorf("purged inv-3 was handled %d times", n)
			}

			// purge all, and the counts
			f.failing.Store(true)
			if err := f.publish(ctx, envelope("inv-5")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "inv-5 dead-lettered", func() bool { return f.count(t) == 1 })
			if out := mustRun(t, cli("dlq", "count", "-o", "json")...); !strings.Contains(out, `"count": 1`) {
				t.Errorf("dlq count: %s", out)
			}
			mustRun(t, cli("dlq", "purge", "-all")...)
			waitFor(t, "purged", func() bool { return f.count(t) == 0 })

			// errors: an unknown ID fails (1); a replay with nothing to say is usage (2)
			if _, errOut, code := runCLI(t, cli("dlq", "replay", "no-such-id")...); code != exitFailure || !strings.Contains(errOut, "not found") {
				t.Errorf("replay of an unknown ID: exit %d, %s", code, errOut)
			}
			if _, _, code := runCLI(t, cli("dlq", "replay")...); code != exitUsage {
				t.Errorf("replay without IDs, -all or filters: exit %d, want %d", code, exitUsage)
			}
		})
	}
}

func compact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

// A record stored without its body cannot be replayed: by ID it is an
// error (exit 1) that says where the original is, before anything is
// replayed; by filter and with -all it is skipped, said so, and stays.
// Redis takes records up to 512 MB, so the record is written as the Redis
// bus writes one.
func TestReplayOfDroppedBody(t *testing.T) {
	f := redisFixture(t)
	cli := func(args ...string) []string { return append(args, f.flags...) }
	flag := func(name string) string { return f.flags[slices.Index(f.flags, name)+1] }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts, err := goredis.ParseURL(flag("-redis-url"))
	if err != nil {
		t.Fatal(err)
	}
	raw := goredis.NewClient(opts)
	defer raw.Close()
	prefix, group := flag("-prefix"), flag("-group")
	source := "{" + prefix + "}:events"
	dropped, err := raw.XAdd(ctx, &goredis.XAddArgs{Stream: "{" + prefix + "}:dlq:" + group, Values: []any{
		"type", invoiceIssued{}.EventType(), "agg_id", "inv-big", "envelope", "", "reason", "permanent",
		"group", group, "handlers", `["` + handlerName + `"]`, "time", time.Now().Format(time.RFC3339Nano),
		"source", source, "source_id", "1-1", "dropped_size", "2000000",
	}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.publish(ctx, envelope("inv-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two dead letters", func() bool { return f.count(t) == 2 })
	var recs []deadLetterJSON
	if err := json.Unmarshal([]byte(mustRun(t, cli("dlq", "list", "-o", "json", "-aggregate", "inv-1")...)), &recs); err != nil || len(recs) != 1 {
		t.Fatalf("dlq list -aggregate inv-1: %+v (%v)", recs, err)
	}
	f.failing.Store(false)

	_, errOut, code := runCLI(t, cli("dlq", "replay", recs[0].ID, dropped)...)
	if code != exitFailure || !strings.Contains(errOut, "no body to replay") || !strings.Contains(errOut, source+" 1-1") {
		t.Errorf("replay of a record without its body: exit %d, %s", code, errOut)
	}
	if n := f.count(t); n != 2 {
		t.Errorf("%d dead letters after the refused replay, want 2: nothing replayed", n)
	}

	_, errOut, code = runCLI(t, cli("dlq", "replay", "-type", invoiceIssued{}.EventType())...)
	if code != exitOK || !strings.Contains(errOut, "skipped 1 dead letter(s) without their body") || !strings.Contains(errOut, dropped) {
		t.Errorf("replay by filter: exit %d, %s", code, errOut)
	}
	waitFor(t, "inv-1 handled after replay", func() bool { return f.handledCount("inv-1") == 1 })

	f.failing.Store(true)
	if err := f.publish(ctx, envelope("inv-2")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "inv-2 dead-lettered", func() bool { return f.count(t) == 2 })
	f.failing.Store(false)
	if out := mustRun(t, cli("dlq", "replay", "-all", "-o", "json")...); !strings.Contains(out, `"replayed": 1`) || !strings.Contains(out, `"skipped": 1`) {
		t.Errorf("dlq replay -all: %s", out)
	}
	waitFor(t, "inv-2 handled after replay -all", func() bool { return f.handledCount("inv-2") == 1 })
	if err := json.Unmarshal([]byte(mustRun(t, cli("dlq", "list", "-o", "json")...)), &recs); err != nil ||
		len(recs) != 1 || recs[0].ID != dropped || !recs[0].BodyDropped {
		t.Errorf("dlq list after the replays: %+v (%v); want the record without its body", recs, err)
	}
}
