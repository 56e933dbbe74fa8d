package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	kafkabus "github.com/eventsource-go/eventsource/bus/kafka"
	rabbitbus "github.com/eventsource-go/eventsource/bus/rabbitmq"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
)

// WireOrderPlaced is the event wire-node/wire.js produces and consumes.
type WireOrderPlaced struct {
	Customer   string
	TotalCents int64
}

func (WireOrderPlaced) EventType() string { return "WireOrderPlaced" }

const wireCount = 3

var (
	wireDepsOnce sync.Once
	wireDeps     string // node_modules of wire-node, outside the tree
	wireDepsErr  error
)

// wireNode returns the node_modules directory for wire-node/wire.js: npm
// ci's install of wire-node's lock file in the user's cache directory
// (keyed by the lock file, so the tree stays clean). .ci/run installs it
// there first. Without node or npm the test skips, or fails under
// EVENTSOURCE_REQUIRE_BROKERS=1.
func wireNode(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, tool+" is not installed; install Node.js 18 or later (node and npm) to run the wire test in another language")
		}
	}
	wireDepsOnce.Do(func() {
		lock, err := os.ReadFile("wire-node/package-lock.json")
		if err != nil {
			wireDepsErr = err
			return
		}
		sum := sha256.Sum256(lock)
		cache, err := os.UserCacheDir()
		if err != nil {
			wireDepsErr = err
			return
		}
		dir := filepath.Join(cache, "eventsource-wire-node", hex.EncodeToString(sum[:])[:12])
		wireDeps = filepath.Join(dir, "node_modules")
		if _, err := os.Stat(filepath.Join(wireDeps, ".package-lock.json")); err == nil {
			return
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			wireDepsErr = err
			return
		}
		pkg, err := os.ReadFile("wire-node/package.json")
		if err != nil {
			wireDepsErr = err
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "package.json"), pkg, 0o644); err != nil {
			wireDepsErr = err
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "package-lock.json"), lock, 0o644); err != nil {
			wireDepsErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			wireDepsErr = fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
		}
	})
	if wireDepsErr != nil {
		unavailable(t, "the wire test's npm packages could not be installed: "+wireDepsErr.Error())
	}
	return wireDeps
}

// nodeRun starts wire.js. With ready, it waits for the script to say it
// listens before returning. wait returns the JSON line it printed last.
func nodeRun(t *testing.T, mode, broker string, vars map[string]string, ready bool) (wait func() []map[string]any) {
	t.Helper()
	deps := wireNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	script, err := filepath.Abs("wire-node/wire.js")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "node", script, mode, broker)
	cmd.Env = append(os.Environ(), "NODE_PATH="+deps, fmt.Sprintf("WIRE_COUNT=%d", wireCount), "WIRE_TIMEOUT_MS=60000")
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	finish := func() (last string) {
		for l := range lines {
			last = l
		}
		err := cmd.Wait()
		cancel()
		if err != nil {
			t.Fatalf("node wire.js %s %s: %v\n%s", mode, broker, err, stderr.String())
		}
		return last
	}
	if ready {
		if l, ok := <-lines; !ok || l != "ready" {
			finish()
			t.Fatalf("node wire.js %s %s said %q before ready\n%s", mode, broker, l, stderr.String())
		}
	}
	return func() []map[string]any {
		last := finish()
		var events []map[string]any
		if err := json.Unmarshal([]byte(last), &events); err != nil {
			t.Fatalf("node wire.js %s %s printed %q: %v", mode, broker, last, err)
		}
		return events
	}
}

func wireRegistry() *eventsource.Registry {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[WireOrderPlaced](r)
	return r
}

// wireEvents are the envelopes Go publishes for the script to read.
func wireEvents() []eventsource.Envelope {
	var envs []eventsource.Envelope
	for i := 1; i <= wireCount; i++ {
		env := eventsource.NewEnvelope(WireOrderPlaced{Customer: fmt.Sprintf("go%d@example.com", i), TotalCents: int64(i * 1000)})
		env.AggregateType, env.AggregateID, env.Version = "Order", "go-order", int64(i)
		env.Metadata.CorrelationID = fmt.Sprintf("go-%d", i)
		envs = append(envs, env)
	}
	return envs
}

// checkNodeRead: the script read what Go published, field by field.
func checkNodeRead(t *testing.T, sent []eventsource.Envelope, read []map[string]any) {
	t.Helper()
	if len(read) != len(sent) {
		t.Fatalf("node read %d events, Go published %d: %v", len(read), len(sent), read)
	}
	for i, env := range sent {
		got := read[i]
		data, _ := got["data"].(map[string]any)
		md, _ := got["metadata"].(map[string]any)
		e := env.Event.(WireOrderPlaced)
		if got["id"] != env.ID.String() || got["type"] != "WireOrderPlaced" || got["aggregate_type"] != "Order" ||
			got["aggregate_id"] != env.AggregateID || got["version"] != float64(env.Version) ||
			data["Customer"] != e.Customer || data["TotalCents"] != float64(e.TotalCents) ||
			md["correlation_id"] != env.Metadata.CorrelationID {
			t.Errorf("node read event %d as %v; Go published %+v", i, got, env)
		}
	}
}

// nodeToGo subscribes a Go handler on b, starts it, runs the script's
// producer, and checks that every event arrived, decoded, in order.
func nodeToGo(t *testing.T, b bus.Bus, broker string, vars map[string]string) {
	t.Helper()
	var mu sync.Mutex
	var got []eventsource.Envelope
	if _, err := bus.On(b, func(_ context.Context, _ WireOrderPlaced, env eventsource.Envelope) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, env)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	sent := nodeRun(t, "produce", broker, vars, false)()
	waitFor(t, time.Minute, "the Go handler to receive the events from node", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= len(sent)
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(sent) {
		t.Fatalf("Go handled %d events, node sent %d", len(got), len(sent))
	}
	for i, env := range got {
		want := sent[i]
		data := want["data"].(map[string]any)
		e := env.Event.(WireOrderPlaced)
		if env.ID.String() != want["id"] || env.AggregateID != want["aggregate_id"] || env.Version != int64(want["version"].(float64)) ||
			e.Customer != data["customer"] || e.TotalCents != int64(data["totalCents"].(float64)) ||
			env.Metadata.CorrelationID != want["metadata"].(map[string]any)["correlation_id"] || env.OccurredAt.IsZero() {
			t.Errorf("Go handled event %d as %+v (%+v); node sent %v", i, env, e, want)
		}
	}
	if st := b.Stats(); st.HandlerErrors != 0 {
		t.Errorf("handler errors: %d", st.HandlerErrors)
	}
}

// TestWireNode: a Node.js service with the common npm clients (redis,
// amqplib, kafkajs) and the Go buses understand each other on every
// broker, in both directions, by the README's wire format alone.
func TestWireNode(t *testing.T) {
	wireNode(t) // skip all at once when Node.js is missing
	t.Run("redis", func(t *testing.T) {
		url := redisURL(t)
		t.Run("node-to-go", func(t *testing.T) {
			e := newRedisEnv(t, url)
			b := e.open(t, redisbus.Config{Registry: wireRegistry(), Group: "wire"})
			nodeToGo(t, b, "redis", map[string]string{"WIRE_URL": url, "WIRE_STREAM": "{" + e.prefix + "}:events"})
		})
		t.Run("go-to-node", func(t *testing.T) {
			e := newRedisEnv(t, url)
			b := e.open(t, redisbus.Config{Registry: wireRegistry(), Group: "wire"})
			wait := nodeRun(t, "consume", "redis", map[string]string{"WIRE_URL": url, "WIRE_STREAM": "{" + e.prefix + "}:events"}, true)
			sent := wireEvents()
			if err := b.Publish(context.Background(), sent...); err != nil {
				t.Fatal(err)
			}
			checkNodeRead(t, sent, wait())
		})
	})
	t.Run("rabbitmq", func(t *testing.T) {
		url := amqpURL(t)
		t.Run("node-to-go", func(t *testing.T) {
			e := newRabbitEnv(t, url)
			b := e.open(t, rabbitbus.Config{Registry: wireRegistry(), Group: "wire"})
			nodeToGo(t, b, "rabbitmq", map[string]string{"WIRE_URL": url, "WIRE_EXCHANGE": e.exchange})
		})
		t.Run("go-to-node", func(t *testing.T) {
			e := newRabbitEnv(t, url)
			b := e.open(t, rabbitbus.Config{Registry: wireRegistry(), Group: "wire"})
			// The script's queue is bound with "#": publishing is routable.
			wait := nodeRun(t, "consume", "rabbitmq", map[string]string{"WIRE_URL": url, "WIRE_EXCHANGE": e.exchange}, true)
			sent := wireEvents()
			if err := b.Publish(context.Background(), sent...); err != nil {
				t.Fatal(err)
			}
			checkNodeRead(t, sent, wait())
		})
	})
	t.Run("kafka", func(t *testing.T) {
		brokers := strings.Join(kafkaBrokers(t), ",")
		t.Run("node-to-go", func(t *testing.T) {
			e := newKafkaEnv(t, kafkaBrokers(t))
			b := e.open(t, kafkabus.Config{Registry: wireRegistry(), Group: "wire"})
			nodeToGo(t, b, "kafka", map[string]string{"WIRE_BROKERS": brokers, "WIRE_TOPIC": e.topic})
		})
		t.Run("go-to-node", func(t *testing.T) {
			e := newKafkaEnv(t, kafkaBrokers(t))
			b := e.open(t, kafkabus.Config{Registry: wireRegistry(), Group: "wire"})
			sent := wireEvents()
			if err := b.Publish(context.Background(), sent...); err != nil {
				t.Fatal(err)
			}
			checkNodeRead(t, sent, nodeRun(t, "consume", "kafka", map[string]string{"WIRE_BROKERS": brokers, "WIRE_TOPIC": e.topic}, true)())
		})
	})
}
