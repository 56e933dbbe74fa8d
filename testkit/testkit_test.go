package testkit_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	kafkabus "github.com/eventsource-go/eventsource/bus/kafka"
	rabbitbus "github.com/eventsource-go/eventsource/bus/rabbitmq"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/testkit"
)

// TestMain removes the shared containers after the tests. Examples have no
// *testing.T to skip with: those whose server is unavailable are left out
// here, with the reason, unless EVENTSOURCE_REQUIRE_BROKERS=1.
func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv(testkit.RequireVar) != "1" {
		var skip []string
		for _, s := range []struct {
			server  testkit.Server
			example string
		}{
			{testkit.ServerRedis, "ExampleStart"},
			{testkit.ServerRabbitMQ, "ExampleStart_rabbitMQ"},
			{testkit.ServerKafka, "ExampleStart_kafka"},
			{testkit.ServerPostgres, "ExampleStart_postgres"},
		} {
			if why := testkit.Unavailable(s.server); why != "" {
				fmt.Fprintf(os.Stderr, "testkit: not running %s: %s\n", s.example, why)
				skip = append(skip, "^"+s.example+"$")
			}
		}
		if len(skip) > 0 {
			_ = flag.Set("test.skip", strings.Join(skip, "|"))
		}
	}
	os.Exit(testkit.Run(m))
}

type Shipped struct{ Carrier string }

func (Shipped) EventType() string { return "Shipped" }

func registry() *eventsource.Registry {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[Shipped](r)
	return r
}

// roundTrip publishes one event on b and waits for its handler.
func roundTrip(t *testing.T, b bus.Bus) {
	t.Helper()
	got := make(chan string, 1)
	if _, err := bus.On(b, func(_ context.Context, e Shipped, env eventsource.Envelope) error {
		select {
		case got <- env.AggregateID + " " + e.Carrier:
		default:
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	env := eventsource.NewEnvelope(Shipped{Carrier: "DHL"})
	env.AggregateType, env.AggregateID, env.Version = "Parcel", "p-1", 1
	if err := b.Publish(ctx, env); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "p-1 DHL" {
			t.Fatalf("handled %q, want %q", s, "p-1 DHL")
		}
	case <-ctx.Done():
		t.Fatal("timed out waiting for the event")
	}
}

func TestRedisBus(t *testing.T) {
	roundTrip(t, testkit.RedisBus(t, redisbus.Config{Registry: registry(), Group: "g", Block: 100 * time.Millisecond}))
}

func TestRabbitMQBus(t *testing.T) {
	roundTrip(t, testkit.RabbitMQBus(t, rabbitbus.Config{Registry: registry(), Group: "g"}))
}

func TestKafkaBus(t *testing.T) {
	roundTrip(t, testkit.KafkaBus(t, kafkabus.Config{Registry: registry(), Group: "g", Partitions: 1}))
}

func TestPostgresStore(t *testing.T) {
	s := testkit.PostgresStore(t, registry())
	env := eventsource.NewEnvelope(Shipped{Carrier: "UPS"})
	env.AggregateType, env.AggregateID = "Parcel", "p-1"
	stream := eventsource.StreamID("Parcel", "p-1")
	if _, err := s.Append(t.Context(), stream, eventstore.NoStream, []eventsource.Envelope{env}); err != nil {
		t.Fatal(err)
	}
	n := 0
	for e, err := range s.Load(t.Context(), stream, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Event.(Shipped).Carrier != "UPS" {
			t.Fatalf("loaded %+v", e.Event)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("loaded %d events, want 1", n)
	}
}

// The variable wins over containers, and no container is started for it.
func TestVariableWins(t *testing.T) {
	t.Setenv("EVENTSOURCE_REDIS_URL", "redis://example.invalid:6379/3")
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	s := testkit.Redis(t)
	if s.URL != "redis://example.invalid:6379/3" || s.Source != "EVENTSOURCE_REDIS_URL" || s.Address() != "example.invalid:6379" {
		t.Fatalf("got %+v", s)
	}
}

// Without the variable and without Docker, Start says how to enable the
// server, and the test functions skip with that message.
func TestUnavailableSaysHow(t *testing.T) {
	t.Setenv("EVENTSOURCE_KAFKA_BROKERS", "")
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	_, err := testkit.Start(t.Context(), testkit.ServerKafka)
	if !errors.Is(err, testkit.ErrUnavailable) {
		t.Fatalf("Start: %v, want ErrUnavailable", err)
	}
	for _, want := range []string{"EVENTSOURCE_KAFKA_BROKERS", "Docker", "EVENTSOURCE_KAFKA_IMAGE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %s", err, want)
		}
	}
}

// A container whose server never answers is removed when the start gives
// up: no container of testkit's is left behind.
func TestFailedStartRemovesContainer(t *testing.T) {
	if os.Getenv("EVENTSOURCE_POSTGRES_URL") != "" {
		t.Setenv("EVENTSOURCE_POSTGRES_URL", "")
	}
	if why := testkit.Unavailable(testkit.ServerPostgres); why != "" {
		t.Skip(why)
	}
	// A Redis image as "PostgreSQL": it starts, but never speaks PostgreSQL.
	redisImage := os.Getenv("EVENTSOURCE_REDIS_IMAGE")
	if redisImage == "" {
		redisImage = "redis:7-alpine"
	}
	// Only containers like the one this start makes (a PostgreSQL of
	// testkit's from the Redis image) count: the integration tests may be
	// starting their own containers at the same time.
	before := testkitContainers(t, redisImage)
	_, err := testkit.Start(t.Context(), testkit.ServerPostgres, testkit.WithImage(redisImage), testkit.WithStartTimeout(5*time.Second))
	if err == nil {
		t.Fatal("Start succeeded with a Redis image for PostgreSQL")
	}
	if errors.Is(err, testkit.ErrUnavailable) {
		t.Skip(err)
	}
	t.Logf("as expected: %v", err)
	if after := testkitContainers(t, redisImage); after > before {
		t.Fatalf("%d PostgreSQL containers of testkit's from %s after the failed start, %d before", after, redisImage, before)
	}
}

func testkitContainers(t *testing.T, image string) int {
	t.Helper()
	cli, err := testcontainers.NewDockerClientWithOpts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	list, err := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true,
		// The label's value is the Server: "PostgreSQL" (with "postgres" this
		// counted nothing, and the test could not fail).
		Filters: make(client.Filters).Add("label", "io.eventsource.testkit="+string(testkit.ServerPostgres)).Add("ancestor", image)})
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

// Dedicated gives the test a container of its own, removed at its end.
// The container is named by its ID: other packages' tests may be starting
// and stopping containers at the same time.
func TestDedicated(t *testing.T) {
	if os.Getenv("EVENTSOURCE_REDIS_URL") != "" {
		t.Setenv("EVENTSOURCE_REDIS_URL", "")
	}
	if why := testkit.Unavailable(testkit.ServerRedis); why != "" {
		t.Skip(why)
	}
	var id string
	t.Run("own", func(t *testing.T) {
		s := testkit.Redis(t, testkit.Dedicated())
		fields := strings.Fields(s.Source)
		if len(fields) != 3 || fields[0] != "container" {
			t.Fatalf("source %q; want container IMAGE ID", s.Source)
		}
		id = fields[2]
		if !containerExists(t, id) {
			t.Errorf("container %s of the test's own is not running", id)
		}
		if shared := testkit.Redis(t); shared.Source == s.Source {
			t.Errorf("the shared Redis is the dedicated one (%s)", s.Source)
		}
	})
	if id != "" && containerExists(t, id) {
		t.Fatalf("container %s still exists after its test ended", id)
	}
}

func containerExists(t *testing.T, id string) bool {
	t.Helper()
	cli, err := testcontainers.NewDockerClientWithOpts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	list, err := cli.ContainerList(t.Context(), client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("id", id)})
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items) > 0
}
