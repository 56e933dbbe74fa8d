// Command orders walks through the framework: an Order aggregate, a
// projection, a notification handler and an audit log on a bus, with the
// store and bus chosen by flags.
//
//	go run ./examples/orders                       # embedded defaults: SQLite file, in-process bus
//	go run ./examples/orders -store memory -bus redis
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/repository"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

type config struct {
	store, bus  string
	sqlitePath  string
	postgresURL string
	redisURL    string
	amqpURL     string
	kafka       string
	timeout     time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("orders", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.store, "store", defaultStore, "event store: memory, sqlite or postgres")
	fs.StringVar(&c.bus, "bus", "memory", "event bus: memory, redis, rabbitmq or kafka")
	fs.StringVar(&c.sqlitePath, "sqlite-path", "orders.db", "SQLite file for -store sqlite")
	fs.StringVar(&c.postgresURL, "postgres-url", os.Getenv("EVENTSOURCE_POSTGRES_URL"), "PostgreSQL URL for -store postgres")
	fs.StringVar(&c.redisURL, "redis-url", envOr("EVENTSOURCE_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL for -bus redis")
	fs.StringVar(&c.amqpURL, "amqp-url", envOr("EVENTSOURCE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "AMQP URL for -bus rabbitmq")
	fs.StringVar(&c.kafka, "kafka-brokers", envOr("EVENTSOURCE_KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka brokers for -bus kafka")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for handlers on a broker-backed bus")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return c, nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	registry := eventsource.NewRegistry()
	registerOrderEvents(registry)

	store, closeStore, err := openStore(ctx, cfg, registry)
	if err != nil {
		return err
	}
	defer closeStore()
	b, cleanupBus, err := openBus(ctx, cfg, registry, logger)
	if err != nil {
		return err
	}
	defer cleanupBus()
	defer b.Close(context.Background())

	// Subscribers: the projection reads three types, the notifier one, the
	// audit log everything.
	summary := NewOrderSummaryProjection()
	notifier := &Notifier{}
	audit := &AuditLog{}
	if _, err := bus.SubscribeProjection(b, summary, bus.WithName("order-summary")); err != nil {
		return err
	}
	if _, err := bus.On(b, notifier.OnPlaced, bus.WithName("notifier")); err != nil {
		return err
	}
	if _, err := b.SubscribeAll(audit, bus.WithName("audit")); err != nil {
		return err
	}
	// Every subscription is declared: start consuming. On a broker this is
	// what keeps a group's backlog from being read before its handlers exist.
	if err := b.Start(ctx); err != nil {
		return err
	}

	repo := repository.New(store, b, newOrder, repository.WithLogger(logger),
		repository.WithSnapshots(eventstore.NewMemorySnapshots(), 100))
	fmt.Fprintf(stdout, "orders example: store=%s bus=%s\n\n", cfg.store, cfg.bus)
	labels, err := walkthrough(ctx, stdout, repo)
	if err != nil {
		return err
	}

	// A broker-backed bus delivers asynchronously: wait until every
	// subscriber has seen its events before reading the results.
	if err := waitFor(ctx, cfg.timeout, func() bool {
		return len(audit.Entries()) >= 5 && len(notifier.Sent()) >= 3 && summary.Summary().Events >= 5
	}); err != nil {
		return fmt.Errorf("waiting for handlers: %w", err)
	}
	closeCtx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if err := b.Close(closeCtx); err != nil {
		return fmt.Errorf("close bus: %w", err)
	}
	stored, err := countStored(ctx, store)
	if err != nil {
		return err
	}
	report(stdout, summary.Summary(), notifier.Sent(), audit.Entries(), labels, b.Stats(), stored)
	return nil
}

// walkthrough places three orders, ships one, cancels one, and shows the
// two ways a command is refused. It returns a label per order ID, since
// the IDs are new on every run.
func walkthrough(ctx context.Context, w io.Writer, repo *repository.Repository[*Order]) (map[string]string, error) {
	run := uuid.NewString()[:8]
	orders := []struct {
		label, customer string
		cents           int64
	}{{"A", "ada@example.com", 25000}, {"B", "grace@example.com", 20000}, {"C", "linus@example.com", 12000}}
	labels := map[string]string{}
	ids := map[string]string{}
	for _, o := range orders {
		id := "order-" + run + "-" + o.label
		labels[id], ids[o.label] = o.label, id
		order := newOrder()
		order.SetID(id)
		if err := order.Place(o.customer, o.cents); err != nil {
			return nil, err
		}
		if err := repo.Save(ctx, order); err != nil {
			return nil, err
		}
		fmt.Fprintf(w, "placed order %s for %s: %s\n", o.label, o.customer, dollars(o.cents))
	}

	// Two copies of order A are loaded; the first ships, the second's
	// cancellation then conflicts and stores nothing.
	first, err := repo.Load(ctx, ids["A"])
	if err != nil {
		return nil, err
	}
	second, err := repo.Load(ctx, ids["A"])
	if err != nil {
		return nil, err
	}
	if err := first.Ship("DHL"); err != nil {
		return nil, err
	}
	if err := repo.Save(ctx, first); err != nil {
		return nil, err
	}
	fmt.Fprintln(w, "shipped order A")
	if err := second.Cancel("changed my mind"); err != nil {
		return nil, err
	}
	if err := repo.Save(ctx, second); !errors.Is(err, eventsource.ErrConcurrencyConflict) {
		return nil, fmt.Errorf("stale save of order A: got %v, want a concurrency conflict", err)
	}
	fmt.Fprintln(w, "cancelling order A from a stale copy: rejected (concurrency conflict)")

	c, err := repo.Load(ctx, ids["C"])
	if err != nil {
		return nil, err
	}
	if err := c.Cancel("out of stock"); err != nil {
		return nil, err
	}
	if err := repo.Save(ctx, c); err != nil {
		return nil, err
	}
	fmt.Fprintln(w, "cancelled order C")

	b, err := repo.Load(ctx, ids["B"])
	if err != nil {
		return nil, err
	}
	if err := b.Place("grace@example.com", 20000); !errors.Is(err, ErrAlreadyPlaced) {
		return nil, fmt.Errorf("placing order B twice: got %v, want ErrAlreadyPlaced", err)
	}
	fmt.Fprintln(w, "placing order B again: rejected (order already placed)")
	return labels, nil
}

func waitFor(ctx context.Context, timeout time.Duration, done func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

func countStored(ctx context.Context, store eventstore.Store) (int, error) {
	n := 0
	for _, err := range store.ReadAll(ctx, 1) {
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func dollars(cents int64) string { return fmt.Sprintf("$%d.%02d", cents/100, cents%100) }

func report(w io.Writer, s Summary, sent []string, audit []eventsource.Envelope, labels map[string]string, st bus.Stats, stored int) {
	fmt.Fprintln(w, "\norder summary (projection):")
	fmt.Fprintf(w, "  total revenue: %s\n", dollars(s.RevenueCents))
	fmt.Fprintf(w, "  placed: %d, shipped: %d, cancelled: %d\n", s.Placed, s.Shipped, s.Cancelled)
	fmt.Fprintf(w, "\nnotifications sent: %d\n", len(sent))
	fmt.Fprintf(w, "\naudit log: %d events\n", len(audit))
	for _, env := range audit {
		fmt.Fprintf(w, "  %-15s order %s v%d\n", env.Type, labels[env.AggregateID], env.Version)
	}
	fmt.Fprintln(w, "\nbus statistics:")
	fmt.Fprintf(w, "  events published: %d\n", st.Published)
	fmt.Fprintf(w, "  handlers invoked: %d\n", st.HandlersInvoked)
	fmt.Fprintf(w, "  handler errors: %d\n", st.HandlerErrors)
	fmt.Fprintf(w, "  subscribers for OrderPlaced: %d\n", st.Subscribers[OrderPlaced{}.EventType()])
	fmt.Fprintf(w, "  wildcard subscribers: %d\n", st.WildcardSubscribers)
	fmt.Fprintf(w, "\nstore history: %d events in total", stored)
	if earlier := stored - len(audit); earlier > 0 {
		fmt.Fprintf(w, " (%d from earlier runs)", earlier)
	}
	fmt.Fprintln(w)
}
