package integration

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
	kafkabus "github.com/eventsource-go/eventsource/bus/kafka"
)

func init() {
	helpers["kafka-consumer"] = kafkaConsumerHelper
}

// kafkaEnv gives a test a unique topic whose topics (events, and every
// group's retry and dead-letter topics) are deleted when it ends.
type kafkaEnv struct {
	brokers []string
	topic   string
	mu      sync.Mutex
	groups  map[string]bool
}

func newKafkaEnv(t *testing.T, brokers []string) *kafkaEnv {
	t.Helper()
	e := &kafkaEnv{brokers: brokers, topic: uniquePrefix(t), groups: map[string]bool{}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e.mu.Lock()
		defer e.mu.Unlock()
		topics := []string{e.topic}
		for g := range e.groups {
			c := kafkabus.Config{Topic: e.topic, Group: g}
			topics = append(topics, c.Topics()[1:]...)
		}
		if err := kafkabus.DeleteTopics(ctx, kafkabus.Config{Brokers: e.brokers}, topics...); err != nil {
			t.Errorf("deleting topics: %v", err)
		}
	})
	return e
}

// config fills what a test leaves out: short group timeouts, topic
// creation, 6 partitions, a quiet log.
func (e *kafkaEnv) config(cfg kafkabus.Config) kafkabus.Config {
	cfg.Brokers, cfg.Topic, cfg.CreateTopics = e.brokers, e.topic, true
	if cfg.Group == "" {
		cfg.Group = "default"
	}
	e.mu.Lock()
	e.groups[cfg.Group] = true
	e.mu.Unlock()
	if cfg.Registry == nil {
		cfg.Registry = bustest.NewRegistry()
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 6
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 2 * time.Second
		cfg.HeartbeatInterval = 100 * time.Millisecond
		cfg.RebalanceTimeout = 10 * time.Second
	}
	if cfg.CommitInterval == 0 {
		cfg.CommitInterval = 50 * time.Millisecond
	}
	if cfg.Retry == (consumer.RetryPolicy{}) {
		cfg.Retry = consumer.RetryPolicy{MaxRetries: 5, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Multiplier: 2}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

func (e *kafkaEnv) open(t *testing.T, cfg kafkabus.Config) *kafkabus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := kafkabus.New(ctx, e.config(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBus(t, b) })
	return b
}

// kfakeServer is an in-process Kafka-protocol broker of the test's own,
// persisting to a directory, so that it can be stopped and started again
// on the same port without touching the shared one.
type kfakeServer struct {
	dir  string
	port int
	c    *kfake.Cluster
}

func startKfake(t *testing.T) *kfakeServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	s := &kfakeServer{dir: t.TempDir(), port: port}
	s.start(t)
	t.Cleanup(func() {
		if s.c != nil {
			s.c.Close()
		}
	})
	return s
}

func (s *kfakeServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

func (s *kfakeServer) start(t *testing.T) {
	t.Helper()
	var err error
	// The port was just released by the previous cluster: retry briefly
	// while the kernel lets go of it.
	waitFor(t, 20*time.Second, "kfake to listen on "+s.addr(), func() bool {
		s.c, err = kfake.NewCluster(kfake.Ports(s.port), kfake.DataDir(s.dir),
			kfake.DefaultNumPartitions(6), kfake.GroupMinSessionTimeout(500*time.Millisecond))
		return err == nil
	})
}

func (s *kfakeServer) stop() {
	s.c.Close()
	s.c = nil
}
