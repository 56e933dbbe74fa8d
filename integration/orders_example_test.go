package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
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
	figures, _ := runOrdersOutput(t, args...)
	return figures
}

// runOrdersOutput is runOrders, with the whole standard output too.
func runOrdersOutput(t *testing.T, args ...string) (figures []string, stdoutText string) {
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
	for line := range strings.Lines(out[i:]) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "Order") || strings.HasPrefix(line, "store history") {
			continue
		}
		figures = append(figures, line)
	}
	return figures, out
}

// TestOrdersExampleSameFiguresOnEveryBus is scenario 6 of each broker bus:
// the walkthrough prints the same figures as on the in-process bus.
func TestOrdersExampleSameFiguresOnEveryBus(t *testing.T) {
	want := runOrders(t, "-bus", "memory")
	for _, line := range []string{"total revenue: $450.00", "handlers invoked: 13", "events published: 5",
		// The payment saga's figures, beside the tutorial's.
		"payments requested: 3", "paid: 1, declined: 1, timed out: 1",
		"orders cancelled by the saga: 2 (1 payment declined, 1 payment timeout)",
		"commands dispatched: 3 RequestPayment, 2 CancelOrder"} {
		if !slices.Contains(want, line) {
			t.Fatalf("in-process figures lack %q: %q", line, want)
		}
	}
	buses := []struct {
		name string
		args func(t *testing.T) []string
		// where: how the output names the place of the events.
		where *regexp.Regexp
	}{
		{"redis", func(t *testing.T) []string { return []string{"-redis-url", redisURL(t)} },
			regexp.MustCompile(`(?m)^events are on Redis stream "\{orders-example-[0-9a-f]{8}\}:events" at redis://\S+ \(consumer group "orders"\)$`)},
		{"rabbitmq", func(t *testing.T) []string { return []string{"-amqp-url", amqpURL(t)} },
			regexp.MustCompile(`(?m)^events are on RabbitMQ exchange "orders-example-[0-9a-f]{8}" at amqp://\S+ \(queue "orders-example-[0-9a-f]{8}\.orders"\)$`)},
		{"kafka", func(t *testing.T) []string { return []string{"-kafka-brokers", strings.Join(kafkaBrokers(t), ",")} },
			regexp.MustCompile(`(?m)^events are on Kafka topic "orders-example-[0-9a-f]{8}" at \S+ \(consumer group "orders-example-[0-9a-f]{8}"\)$`)},
	}
	for _, b := range buses {
		t.Run(b.name, func(t *testing.T) {
			got, out := runOrdersOutput(t, append([]string{"-bus", b.name}, b.args(t)...)...)
			if !slices.Equal(got, want) {
				t.Errorf("-bus %s figures differ from the in-process bus:\n got %q\nwant %q", b.name, got, want)
			}
			if !b.where.MatchString(out) || !strings.Contains(out, "connecting to ") {
				t.Errorf("-bus %s does not say where its events are (want a line matching %s):\n%s", b.name, b.where, out)
			}
			if strings.Contains(out, "guest:guest") {
				t.Errorf("-bus %s printed a password:\n%s", b.name, out)
			}
		})
	}
}

// TestOrdersExampleCommandLine runs the built example as a newcomer would:
// -h succeeds and lists the flags; a mistyped backend fails with status 2
// and creates nothing in the working directory.
func TestOrdersExampleCommandLine(t *testing.T) {
	bin := ordersBinary(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "-h")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("orders -h: %v\n%s", err, out)
	}
	for _, want := range []string{"-bus", "-store", "-sqlite-path", "-timeout"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("orders -h lacks %q:\n%s", want, out)
		}
	}
	for _, args := range [][]string{{"-bus", "nats"}, {"-store", "mongo"}, {"-nosuch"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("orders %q: %v, want exit status 2\n%s", args, err, out)
		}
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			t.Fatalf("orders %q created %s", args, entries[0].Name())
		}
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
			return []string{"-postgres-url", postgresURL(t)}
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
