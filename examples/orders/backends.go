package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/kafka"
	"github.com/eventsource-go/eventsource/bus/rabbitmq"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/internal/redact"
)

// The embedded store is the default: a SQLite file in the working
// directory, so a second run shows the history of the first.
const defaultStore = "sqlite"

// openStore returns the store named by -store and a function that closes it.
func openStore(ctx context.Context, cfg config, registry *eventsource.Registry) (eventstore.Store, func(), error) {
	switch cfg.store {
	case "memory":
		return eventstore.NewMemory(), func() {}, nil
	case "sqlite":
		s, err := sqlite.Open(ctx, cfg.sqlitePath, sqlite.WithRegistry(registry))
		if err != nil {
			return nil, nil, err
		}
		return s, func() { _ = s.Close() }, nil
	case "postgres":
		pool, err := pgxpool.New(ctx, cfg.postgresURL)
		if err != nil {
			return nil, nil, fmt.Errorf("postgres: %w", err)
		}
		if err := postgres.Migrate(ctx, pool); err != nil {
			pool.Close()
			return nil, nil, err
		}
		return postgres.New(pool, registry), pool.Close, nil
	}
	return nil, nil, fmt.Errorf("unknown -store %q: use memory, sqlite or postgres", cfg.store)
}

// openBus returns the bus named by -bus, and a function that removes what
// the run left on the broker. Broker-backed buses get names unique to the
// run, so a run never sees an earlier run's events.
func openBus(ctx context.Context, cfg config, registry *eventsource.Registry, logger *slog.Logger) (bus.Bus, func(), error) {
	run := "orders-example-" + uuid.NewString()[:8]
	switch cfg.bus {
	case "memory":
		return bus.NewInProcess(bus.WithLogger(logger)), func() {}, nil
	case "redis":
		b, err := redisbus.New(ctx, redisbus.Config{URL: cfg.redisURL, Registry: registry, StreamPrefix: run, Group: "orders", Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		return b, func() { deleteRedisKeys(cfg.redisURL, run) }, nil
	case "rabbitmq":
		c := rabbitmq.Config{URL: cfg.amqpURL, Registry: registry, Exchange: run, Group: "orders", Logger: logger}
		b, err := rabbitmq.New(ctx, c)
		if err != nil {
			return nil, nil, err
		}
		return b, func() { deleteRabbitTopology(cfg.amqpURL, b.Config().Names()) }, nil
	case "kafka":
		// A group of its own too: a Kafka group spans the broker, and a
		// run sharing one with a run that died would wait for that
		// member's session to expire before it gets its partitions.
		group := cfg.kafkaGroup
		if group == "" {
			group = run
		}
		c := kafka.Config{Brokers: strings.Split(cfg.kafka, ","), Registry: registry, Topic: run,
			Group: group, CreateTopics: true, Logger: logger}
		b, err := kafka.New(ctx, c)
		if err != nil {
			return nil, nil, err
		}
		return b, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = kafka.DeleteTopics(ctx, b.Config(), b.Topics()...)
		}, nil
	}
	return nil, nil, fmt.Errorf("unknown -bus %q: use memory, redis, rabbitmq or kafka", cfg.bus)
}

// busLocation says where a broker-backed bus keeps the events: the Redis
// stream, the RabbitMQ exchange and queue, the Kafka topic. It is "" for
// the in-process bus.
func busLocation(b bus.Bus) string {
	switch b := b.(type) {
	case *redisbus.Bus:
		c := b.Config()
		return fmt.Sprintf("Redis stream %q at %s (consumer group %q)", "{"+c.StreamPrefix+"}:events", c.RedactedURL(), c.Group)
	case *rabbitmq.Bus:
		n := b.Config().Names()
		return fmt.Sprintf("RabbitMQ exchange %q at %s (queue %q)", n.Exchange, redact.URL(b.Config().URL), n.Queue)
	case *kafka.Bus:
		c := b.Config()
		return fmt.Sprintf("Kafka topic %q at %s (consumer group %q)", c.Topic, strings.Join(c.Brokers, ","), c.Group)
	}
	return ""
}

// brokerAddress names the broker -bus chose, without its password.
func brokerAddress(cfg config) string {
	switch cfg.bus {
	case "redis":
		return "Redis at " + redact.URL(cfg.redisURL)
	case "rabbitmq":
		return "RabbitMQ at " + redact.URL(cfg.amqpURL)
	case "kafka":
		return "Kafka at " + cfg.kafka
	}
	return "the " + cfg.bus + " bus"
}

func busLocationOr(b bus.Bus, name string) string {
	if where := busLocation(b); where != "" {
		return where
	}
	return "the " + name + " bus"
}

// deleteRabbitTopology removes the run's exchange and queues.
func deleteRabbitTopology(url string, names rabbitmq.Names) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	for _, q := range append([]string{names.Queue, names.DeadLetterQueue}, names.RetryQueues...) {
		_, _ = ch.QueueDelete(q, false, false, false)
	}
	_ = ch.ExchangeDelete(names.Exchange, false, false)
}

// deleteRedisKeys removes the run's streams; the example is a demo and
// should leave nothing behind.
func deleteRedisKeys(url, prefix string) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		return
	}
	c := goredis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = redisbus.DeleteKeys(ctx, c, prefix) // best effort: the run's streams, at exit
}
