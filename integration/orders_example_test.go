package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/internal/testenv"
)

var (
	ordersOnce sync.Once
	ordersBin  string
	ordersErr  error
)

// ordersBinary builds examples/orders once per test run.
func ordersBinary(t *testing.T) string {
	t.Helper()
	ordersOnce.Do(func() {
		dir, err := os.MkdirTemp("", "orders-example")
		if err != nil {
			ordersErr = err
			return
		}
		brokers.onTerminate(func() { _ = os.RemoveAll(dir) })
		ordersBin = filepath.Join(dir, "orders")
		cmd := exec.Command("go", "build", "-o", ordersBin, "github.com/eventsource-go/eventsource/examples/orders")
		if out, err := cmd.CombinedOutput(); err != nil {
			ordersErr = &buildError{out: string(out), err: err}
		}
	})
	if ordersErr != nil {
		t.Fatalf("building examples/orders: %v", ordersErr)
	}
	return ordersBin
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// runOrders runs the walkthrough and returns its figures: the lines from
// the projection's summary on, less the audit log's entries (their order
// across aggregates depends on the bus) and the store's history.
func runOrders(t *testing.T, args ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, ordersBinary(t), append([]string{"-store", "memory"}, args...)...)
	cmd.Dir = t.TempDir()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("orders %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	i := strings.Index(out, "order summary")
	if i < 0 {
		t.Fatalf("orders %v printed no summary:\n%s", args, out)
	}
	var figures []string
	for line := range strings.Lines(out[i:]) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "Order") || strings.HasPrefix(line, "store history") {
			continue
		}
		figures = append(figures, line)
	}
	return figures
}

// TestOrdersExampleSameFiguresOnEveryBus is scenario 6 of each broker bus:
// the walkthrough prints the same figures as on the in-process bus.
func TestOrdersExampleSameFiguresOnEveryBus(t *testing.T) {
	want := runOrders(t, "-bus", "memory")
	for _, line := range []string{"total revenue: $450.00", "handlers invoked: 13", "events published: 5"} {
		if !slices.Contains(want, line) {
			t.Fatalf("in-process figures lack %q: %q", line, want)
		}
	}
	buses := []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"redis", func(t *testing.T) []string { return []string{"-redis-url", redisURL(t)} }},
		{"rabbitmq", func(t *testing.T) []string { return []string{"-amqp-url", amqpURL(t)} }},
		{"kafka", func(t *testing.T) []string { return []string{"-kafka-brokers", strings.Join(kafkaBrokers(t), ",")} }},
	}
	for _, b := range buses {
		t.Run(b.name, func(t *testing.T) {
			got := runOrders(t, append([]string{"-bus", b.name}, b.args(t)...)...)
			if !slices.Equal(got, want) {
				t.Errorf("-bus %s figures differ from the in-process bus:\n got %q\nwant %q", b.name, got, want)
			}
		})
	}
}

// TestOrdersExampleOnEveryStore runs the walkthrough on the durable stores:
// the figures are those of the in-memory store.
func TestOrdersExampleOnEveryStore(t *testing.T) {
	want := runOrders(t, "-bus", "memory")
	stores := []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"sqlite", func(t *testing.T) []string {
			return []string{"-sqlite-path", filepath.Join(t.TempDir(), "orders.db")}
		}},
		{"postgres", func(t *testing.T) []string {
			return []string{"-postgres-url", testenv.URL(t, "EVENTSOURCE_POSTGRES_URL",
				"set it to a PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable")}
		}},
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			got := runOrders(t, append([]string{"-store", s.name}, s.args(t)...)...)
			if !slices.Equal(got, want) {
				t.Errorf("-store %s figures differ from the memory store:\n got %q\nwant %q", s.name, got, want)
			}
		})
	}
}
