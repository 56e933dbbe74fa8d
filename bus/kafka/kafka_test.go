package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

const howToEnable = "start a Kafka-protocol broker (go build -o /tmp/kfake ./integration/cmd/kfake && /tmp/kfake) " +
	"and set EVENTSOURCE_KAFKA_BROKERS=127.0.0.1:9092 to run the Kafka bus tests"

func brokers(t testing.TB) []string {
	return strings.Split(testenv.URL(t, "EVENTSOURCE_KAFKA_BROKERS", howToEnable), ",")
}

// fastRetry keeps retrying tests short.
var fastRetry = consumer.RetryPolicy{MaxRetries: 3, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Multiplier: 2}

var topicSeq atomic.Int64

// uniqueTopic names a test's topics.
func uniqueTopic(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), topicSeq.Add(1))
}

// testConfig fills what the tests leave out: short group timeouts (the
// kfake command accepts sessions from 500ms), topic creation, a quiet log.
func testConfig(t testing.TB, cfg Config) Config {
	t.Helper()
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = brokers(t)
	}
	if cfg.Registry == nil {
		cfg.Registry = bustest.NewRegistry()
	}
	if cfg.Retry == (consumer.RetryPolicy{}) {
		cfg.Retry = fastRetry
	}
	cfg.CreateTopics = true
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 3 * time.Second
		cfg.HeartbeatInterval = 100 * time.Millisecond
		cfg.RebalanceTimeout = 10 * time.Second
	}
	if cfg.CommitInterval == 0 {
		cfg.CommitInterval = 50 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// cleanupTopics deletes the topics of cfg's bus when the test ends, after
// the buses it opened are closed (cleanups run last-registered first).
func cleanupTopics(t testing.TB, cfg Config) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := DeleteTopics(ctx, cfg, cfg.Topics()...); err != nil {
			t.Errorf("deleting topics: %v", err)
		}
	})
}

func open(t testing.TB, cfg Config) *Bus {
	t.Helper()
	cfg = testConfig(t, cfg)
	cleanupTopics(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func closeBus(t testing.TB, b *Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func TestConformance(t *testing.T) {
	brokers(t)
	bustest.Run(t, bustest.Features{ConsumerGroups: true, OrderingPerAggregate: true, Persistence: true, MaxEventBytes: 1 << 20, Timeout: 30 * time.Second},
		func(t *testing.T, cfg bustest.Config) bus.Bus {
			return open(t, Config{Registry: cfg.Registry, Topic: cfg.Namespace, Group: cfg.Group})
		})
}

func TestCommitPointStopsAtFirstUnsettled(t *testing.T) {
	p := newPartition("t", 0, -2) // no committed offset yet
	if _, ok := p.commitPoint(); ok {
		t.Fatal("commit point before anything was fetched")
	}
	for _, off := range []int64{10, 11, 12, 13} {
		p.fetched(off)
	}
	p.settle(11, 13)
	if off, _ := p.commitPoint(); off != 10 {
		t.Errorf("commit point %d with 10 unsettled, want 10", off)
	}
	p.settle(10)
	if off, _ := p.commitPoint(); off != 12 {
		t.Errorf("commit point %d after 10, 11 settled, want 12", off)
	}
	p.release(1) // 12 handed back at Close: it must be read again
	p.settle(12 + 100)
	if off, _ := p.commitPoint(); off != 12 || p.pending() != 0 {
		t.Errorf("commit point %d, pending %d after releasing 12; want 12, 0", off, p.pending())
	}
	q := newPartition("t", 1, 40)
	if off, ok := q.commitPoint(); !ok || off != 40 {
		t.Errorf("committed offset not taken as the commit point: %d %v", off, ok)
	}
}

// The dead-letter topic the bus creates keeps its records until they are
// replayed or purged (compacted, no time limit): with the broker's
// defaults, dead letters nobody replayed within a week would vanish.
func TestDeadLetterTopicKeepsRecords(t *testing.T) {
	cfg := testConfig(t, Config{Topic: uniqueTopic("dlqcfg"), Group: "g"})
	b := open(t, cfg)
	defer closeBus(t, b)
	if _, err := b.Subscribe(bustest.Ping{}.EventType(), bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return nil })); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := b.client.DescribeConfigs(ctx, &kafkago.DescribeConfigsRequest{Resources: []kafkago.DescribeConfigRequestResource{{
		ResourceType: kafkago.ResourceTypeTopic, ResourceName: cfg.WithDefaults().dlqTopic(),
		ConfigNames: []string{"cleanup.policy", "retention.ms"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range resp.Resources {
		if r.Error != nil {
			t.Fatal(r.Error)
		}
		for _, e := range r.ConfigEntries {
			got[e.ConfigName] = e.ConfigValue
		}
	}
	if got["cleanup.policy"] != "compact" || got["retention.ms"] != "-1" {
		t.Errorf("dead-letter topic config %v, want cleanup.policy=compact, retention.ms=-1", got)
	}
}
