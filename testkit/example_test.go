package testkit_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"

	redisbus "github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/testkit"
)

// Start gives a server outside a test: EVENTSOURCE_REDIS_URL when set,
// else a container that Close removes.
func ExampleStart() {
	ctx := context.Background()
	redis, err := testkit.Start(ctx, testkit.ServerRedis)
	if err != nil {
		fmt.Println(err) // says how to enable it
		return
	}
	defer redis.Close()
	opts, _ := goredis.ParseURL(redis.URL)
	c := goredis.NewClient(opts)
	defer c.Close()
	fmt.Println(c.Ping(ctx).Val())
	// Output: PONG
}

func ExampleStart_rabbitMQ() {
	rabbit, err := testkit.Start(context.Background(), testkit.ServerRabbitMQ)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rabbit.Close()
	conn, err := amqp.Dial(rabbit.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	fmt.Println("AMQP", conn.Major, conn.Minor)
	// Output: AMQP 0 9
}

func ExampleStart_kafka() {
	ctx := context.Background()
	kafka, err := testkit.Start(ctx, testkit.ServerKafka)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer kafka.Close()
	conn, err := (&kafkago.Dialer{Timeout: 30 * time.Second}).DialContext(ctx, "tcp", kafka.Brokers()[0])
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	brokers, err := conn.Brokers()
	fmt.Println(len(brokers) > 0, err)
	// Output: true <nil>
}

func ExampleStart_postgres() {
	ctx := context.Background()
	pg, err := testkit.Start(ctx, testkit.ServerPostgres)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pg.Close()
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close(ctx)
	var db string
	err = conn.QueryRow(ctx, "select current_database()").Scan(&db)
	fmt.Println(db, err)
	// Output: test <nil>
}

// In a test, one call gives a bus on a server found as the package
// documentation says, closed and cleaned up when the test ends (this
// example is compiled, not run: it needs a *testing.T).
func ExampleRedisBus() {
	var t *testing.T // the test's
	// readme-testkit {
	b := testkit.RedisBus(t, redisbus.Config{Registry: registry(), Group: "billing"}) // closed, keys deleted at cleanup
	store := testkit.PostgresStore(t, registry())                                     // in a schema of the test's own
	// readme-testkit }
	_, _ = b, store // bus.On(b, …); b.Start(ctx); b.Publish(ctx, …)
}

// TestMain removes the containers the package's tests shared.
func ExampleRun() {
	var m *testing.M // TestMain's
	os.Exit(testkit.Run(m))
}
