package testkit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	kafkabus "github.com/eventsource-go/eventsource/bus/kafka"
	rabbitbus "github.com/eventsource-go/eventsource/bus/rabbitmq"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
)

// Redis returns a Redis for the test: EVENTSOURCE_REDIS_URL when set, else
// a container (EVENTSOURCE_REDIS_IMAGE, default redis:7-alpine) shared by
// the test binary's tests, else it skips the test saying how to enable it
// (fails under EVENTSOURCE_REQUIRE_BROKERS=1). Its URL is redis://host:port/0.
func Redis(t testing.TB, opts ...Option) Service {
	t.Helper()
	return service(t, ServerRedis, opts)
}

// RabbitMQ is Redis for RabbitMQ: EVENTSOURCE_AMQP_URL, else a container
// (EVENTSOURCE_RABBITMQ_IMAGE, default rabbitmq:3.13-alpine). Its URL is
// amqp://guest:guest@host:port/.
func RabbitMQ(t testing.TB, opts ...Option) Service {
	t.Helper()
	return service(t, ServerRabbitMQ, opts)
}

// Kafka is Redis for Kafka: EVENTSOURCE_KAFKA_BROKERS (host:port, comma
// separated), else a container (EVENTSOURCE_KAFKA_IMAGE, default
// apache/kafka:3.9.0, a single KRaft node). Service.Brokers lists them.
func Kafka(t testing.TB, opts ...Option) Service {
	t.Helper()
	return service(t, ServerKafka, opts)
}

// Postgres is Redis for PostgreSQL: EVENTSOURCE_POSTGRES_URL, else a
// container (EVENTSOURCE_POSTGRES_IMAGE, default postgres:16-alpine) with
// database test and trust authentication. Its URL is
// postgres://postgres@host:port/test?sslmode=disable.
func Postgres(t testing.TB, opts ...Option) Service {
	t.Helper()
	return service(t, ServerPostgres, opts)
}

// uniqueName names a test's streams, exchanges and topics.
func uniqueName(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '-'
	}, t.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	return "tk-" + name + "-" + uuid.NewString()[:8]
}

// RedisBus returns a Redis bus for the test (see Redis), opened with cfg:
// cfg.URL is set to the server's, and cfg.StreamPrefix, when empty, to a
// name of the test's own. cfg.Registry is required. The bus is closed
// when the test ends and every key under its prefix deleted.
func RedisBus(t testing.TB, cfg redisbus.Config, opts ...Option) *redisbus.Bus {
	t.Helper()
	cfg.URL = Redis(t, opts...).URL
	if cfg.StreamPrefix == "" {
		cfg.StreamPrefix = uniqueName(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := redisbus.New(ctx, cfg)
	if err != nil {
		t.Fatalf("testkit: opening the Redis bus: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("testkit: closing the Redis bus: %v", err)
		}
		if err := deleteRedisKeys(ctx, cfg.URL, cfg.StreamPrefix); err != nil {
			t.Errorf("testkit: deleting the Redis bus's keys: %v", err)
		}
	})
	return b
}

func deleteRedisKeys(ctx context.Context, url, prefix string) error {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		return err
	}
	c := goredis.NewClient(opts)
	defer c.Close()
	_, err = redisbus.DeleteKeys(ctx, c, prefix)
	return err
}

// RabbitMQBus returns a RabbitMQ bus for the test (see RabbitMQ), opened
// with cfg: cfg.URL is set to the server's, and cfg.Exchange, when empty,
// to a name of the test's own. cfg.Registry is required. The bus is closed
// when the test ends, then its group's queues (main, retry delays, dead
// letters) and the exchange are deleted.
func RabbitMQBus(t testing.TB, cfg rabbitbus.Config, opts ...Option) *rabbitbus.Bus {
	t.Helper()
	cfg.URL = RabbitMQ(t, opts...).URL
	if cfg.Exchange == "" {
		cfg.Exchange = uniqueName(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := rabbitbus.New(ctx, cfg)
	if err != nil {
		t.Fatalf("testkit: opening the RabbitMQ bus: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("testkit: closing the RabbitMQ bus: %v", err)
		}
		if err := deleteRabbitObjects(cfg.URL, cfg.Names()); err != nil {
			t.Errorf("testkit: deleting the RabbitMQ bus's queues and exchange: %v", err)
		}
	})
	return b
}

func deleteRabbitObjects(url string, n rabbitbus.Names) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	for _, q := range append([]string{n.Queue, n.DeadLetterQueue}, n.RetryQueues...) {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			return fmt.Errorf("queue %s: %w", q, err)
		}
	}
	if err := ch.ExchangeDelete(n.Exchange, false, false); err != nil {
		return fmt.Errorf("exchange %s: %w", n.Exchange, err)
	}
	return nil
}

// KafkaBus returns a Kafka bus for the test (see Kafka), opened with cfg:
// cfg.Brokers is set to the server's, cfg.Topic, when empty, to a name of
// the test's own, and cfg.CreateTopics to true. cfg.Registry is required.
// The bus is closed when the test ends and its topics (events, and the
// group's retry and dead-letter topics) deleted.
func KafkaBus(t testing.TB, cfg kafkabus.Config, opts ...Option) *kafkabus.Bus {
	t.Helper()
	cfg.Brokers = Kafka(t, opts...).Brokers()
	if cfg.Topic == "" {
		cfg.Topic = uniqueName(t)
	}
	cfg.CreateTopics = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := kafkabus.New(ctx, cfg)
	if err != nil {
		t.Fatalf("testkit: opening the Kafka bus: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("testkit: closing the Kafka bus: %v", err)
		}
		if err := kafkabus.DeleteTopics(ctx, kafkabus.Config{Brokers: cfg.Brokers}, cfg.Topics()...); err != nil {
			t.Errorf("testkit: deleting the Kafka bus's topics: %v", err)
		}
	})
	return b
}

// PostgresStore returns an event store for the test on PostgreSQL (see
// Postgres), decoding with registry, in a schema of the test's own that
// Migrate has prepared. The pool is closed and the schema dropped when the
// test ends. For store options (the page size), use PostgresPool,
// postgres.Migrate and postgres.New.
func PostgresStore(t testing.TB, registry *eventsource.Registry, opts ...Option) *postgres.Store {
	t.Helper()
	pool := PostgresPool(t, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := postgres.Migrate(ctx, pool); err != nil {
		t.Fatalf("testkit: migrating the PostgreSQL store: %v", err)
	}
	return postgres.New(pool, registry)
}

// PostgresPool returns a connection pool for the test on PostgreSQL (see
// Postgres) whose search_path is a new schema of the test's own. The pool
// is closed and the schema dropped when the test ends.
func PostgresPool(t testing.TB, opts ...Option) *pgxpool.Pool {
	t.Helper()
	url := Postgres(t, opts...).URL
	schema := "tk_" + strings.ReplaceAll(uuid.NewString()[:13], "-", "_")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := execPostgres(ctx, url, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("testkit: creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := execPostgres(ctx, url, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("testkit: dropping schema %s: %v", schema, err)
		}
	})
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("testkit: opening a pool on PostgreSQL: %v", err)
	}
	t.Cleanup(pool.Close) // runs before the schema is dropped
	return pool
}

func execPostgres(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}
