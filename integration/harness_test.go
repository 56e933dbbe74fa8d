package integration

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/testkit"
)

// helperEnv, when set, makes the test binary run the named helper process
// instead of the tests (scenarios that kill a consumer run it as a child).
const helperEnv = "EVENTSOURCE_INTEGRATION_HELPER"

// helpers are the child processes the tests can start, by name.
var helpers = map[string]func() int{
	"redis-consumer": redisConsumerHelper,
}

// brokers holds what the tests clean up once for the whole package, after
// the servers testkit started (terminated by TestMain).
var brokers harness

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		h, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(h())
	}
	code := m.Run()
	brokers.terminate()
	if err := testkit.Terminate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

type harness struct {
	mu      sync.Mutex
	cleanup func()
}

// containersVar, set to 1, makes the tests use testkit's containers even
// where a server answers on its standard loopback port (.ci/containers).
const containersVar = "EVENTSOURCE_CONTAINERS"

// server returns the URL of the server the tests run against: its variable
// when set; else, unless EVENTSOURCE_CONTAINERS=1, the server on its
// standard loopback port when one answers (internal/testenv); else
// testkit's container when a Docker engine answers. Otherwise the test is
// skipped saying how to enable it, or fails under
// EVENTSOURCE_REQUIRE_BROKERS=1. It logs testenv's marker line, for the
// test command's summary.
func server(t *testing.T, s testkit.Server, name string) string {
	t.Helper()
	if os.Getenv(containersVar) != "1" {
		if v, source, ok, _ := testenv.Lookup(name); ok {
			t.Logf("%s%s %s (%s)", testenv.Marker, s, redacted(v), source)
			return v
		}
	}
	svc := serverFuncs[s](t)
	t.Logf("%s%s %s (%s)", testenv.Marker, s, svc.Address(), svc.Source)
	return svc.URL
}

var serverFuncs = map[testkit.Server]func(testing.TB, ...testkit.Option) testkit.Service{
	testkit.ServerRedis:    testkit.Redis,
	testkit.ServerRabbitMQ: testkit.RabbitMQ,
	testkit.ServerKafka:    testkit.Kafka,
	testkit.ServerPostgres: testkit.Postgres,
}

// redacted is v without a password.
func redacted(v string) string {
	return testkit.Service{URL: v}.Redacted()
}

// redisURL returns the Redis to test against (see server).
func redisURL(t *testing.T) string {
	t.Helper()
	return server(t, testkit.ServerRedis, "EVENTSOURCE_REDIS_URL")
}

// amqpURL returns the RabbitMQ to test against (see server).
func amqpURL(t *testing.T) string {
	t.Helper()
	return server(t, testkit.ServerRabbitMQ, "EVENTSOURCE_AMQP_URL")
}

// kafkaBrokers returns the Kafka brokers to test against (see server): CI
// starts integration/cmd/kfake on 127.0.0.1:9092.
func kafkaBrokers(t *testing.T) []string {
	t.Helper()
	return strings.Split(server(t, testkit.ServerKafka, "EVENTSOURCE_KAFKA_BROKERS"), ",")
}

// postgresURL returns the PostgreSQL to test against (see server).
func postgresURL(t *testing.T) string {
	t.Helper()
	return server(t, testkit.ServerPostgres, "EVENTSOURCE_POSTGRES_URL")
}

// unavailable skips, or fails when CI requires every broker.
func unavailable(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv(testenv.RequireVar) == "1" {
		t.Fatalf("%s (%s=1 requires it)", msg, testenv.RequireVar)
	}
	t.Skip(msg)
}

func (h *harness) onTerminate(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev := h.cleanup
	h.cleanup = func() {
		f()
		if prev != nil {
			prev()
		}
	}
}

func (h *harness) terminate() {
	h.mu.Lock()
	f := h.cleanup
	h.mu.Unlock()
	if f != nil {
		f()
	}
}

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			// The goroutines say where a stall is, which a flaky run on a
			// CI machine cannot be asked again.
			buf := make([]byte, 1<<20)
			t.Logf("goroutines at the timeout:\n%s", buf[:runtime.Stack(buf, true)])
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// waitForProgress polls position until it reaches target, failing the
// test only when it stops moving for stall: a slow machine (the race
// detector on two loaded cores) may take long, but a stuck one fails.
func waitForProgress(t *testing.T, stall time.Duration, what string, position func() int64, target int64) {
	t.Helper()
	last, moved := position(), time.Now()
	for last < target {
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the stall deadline
		if p := position(); p != last {
			last, moved = p, time.Now()
			continue
		}
		if time.Since(moved) > stall {
			buf := make([]byte, 1<<20)
			t.Logf("goroutines at the stall:\n%s", buf[:runtime.Stack(buf, true)])
			t.Fatalf("%s: stuck at %d of %d for %v", what, last, target, stall)
		}
	}
}

// uniquePrefix names a test's streams.
func uniquePrefix(t *testing.T) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return fmt.Sprintf("it-%s-%d", name, time.Now().UnixNano())
}
