// Command orders walks through the framework: an Order aggregate, a
// projection, a notification handler and an audit log on a bus, with the
// store and bus chosen by flags.
//
//	go run ./examples/orders                       # embedded defaults: SQLite file, in-process bus
//	go run ./examples/orders -store memory -bus redis
//	go run ./examples/orders -h                    # every flag, and what each needs running
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
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/repository"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := exitCode(run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

// exitCode is the process's status for what run returned: 0 for success
// and for -h (the usage was asked for), 2 for a bad command line (the
// flag package printed why), 1 otherwise.
func exitCode(err error, stderr io.Writer) int {
	var usage usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, "orders:", err)
		fmt.Fprintln(stderr, "run 'orders -h' for the flags")
		return 2
	case errors.Is(err, errFlagSyntax):
		return 2
	}
	fmt.Fprintln(stderr, "orders:", err)
	return 1
}

// usageError is a command line that parses but asks for something the
// example does not have; nothing has been created when it is returned.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// errFlagSyntax wraps what the flag package refused (it printed why).
var errFlagSyntax = errors.New("bad flags")

type config struct {
	store, bus  string
	sqlitePath  string
	postgresURL string
	redisURL    string
	amqpURL     string
	kafka       string
	kafkaGroup  string
	timeout     time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("orders", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.store, "store", defaultStore, "event store: memory, sqlite or postgres")
	fs.StringVar(&c.bus, "bus", "memory", "event bus: memory, redis, rabbitmq or kafka")
	fs.StringVar(&c.sqlitePath, "sqlite-path", "orders.db", "SQLite file for -store sqlite")
	fs.StringVar(&c.postgresURL, "postgres-url", envOr("EVENTSOURCE_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL URL for -store postgres")
	fs.StringVar(&c.redisURL, "redis-url", envOr("EVENTSOURCE_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL for -bus redis")
	fs.StringVar(&c.amqpURL, "amqp-url", envOr("EVENTSOURCE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "AMQP URL for -bus rabbitmq")
	fs.StringVar(&c.kafka, "kafka-brokers", envOr("EVENTSOURCE_KAFKA_BROKERS", "127.0.0.1:9092"), "Kafka brokers (comma-separated) for -bus kafka")
	fs.StringVar(&c.kafkaGroup, "kafka-group", "", "Kafka consumer group for -bus kafka (default: one named for the run, as its topic)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for handlers on a broker-backed bus")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %w", errFlagSyntax, err)
	}
	if fs.NArg() > 0 {
		return c, usageError{fmt.Sprintf("unexpected arguments: %v", fs.Args())}
	}
	// Check every choice before anything is opened or created: a mistyped
	// -bus must not leave an orders.db behind.
	switch c.store {
	case "memory", "sqlite", "postgres":
	default:
		return c, usageError{fmt.Sprintf("unknown -store %q: use memory, sqlite or postgres", c.store)}
	}
	switch c.bus {
	case "memory", "redis", "rabbitmq", "kafka":
	default:
		return c, usageError{fmt.Sprintf("unknown -bus %q: use memory, redis, rabbitmq or kafka", c.bus)}
	}
	if c.store == "postgres" && c.postgresURL == "" {
		return c, usageError{"-store postgres needs -postgres-url (or EVENTSOURCE_POSTGRES_URL)"}
	}
	if c.store == "sqlite" && c.sqlitePath == "" {
		return c, usageError{"-store sqlite needs -sqlite-path"}
	}
	if c.bus == "kafka" && strings.Trim(c.kafka, ", ") == "" {
		return c, usageError{"-bus kafka needs -kafka-brokers"}
	}
	if c.timeout <= 0 {
		return c, usageError{"-timeout must be positive"}
	}
	return c, nil
}

const usageText = `Usage: orders [flags]

The orders walkthrough: places, ships and cancels orders through a
repository, a projection, a notifier and an audit log on a bus.

With no flags it needs nothing running: events go to a SQLite file
(orders.db in the working directory; a second run shows the history of the
first) and through the in-process bus. The other choices need a server:

  -store memory     nothing; the events are gone when the run ends
  -store postgres   PostgreSQL at -postgres-url (the database must exist)
  -bus redis        Redis 6.2 or later at -redis-url
  -bus rabbitmq     RabbitMQ at -amqp-url
  -bus kafka        a Kafka broker at -kafka-brokers (topics are created)

On a broker each run uses names of its own (printed) and deletes them at
the end. The URLs default to the EVENTSOURCE_* variables, else to the
standard ports on 127.0.0.1.

Flags:
`

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
	registerPaymentEvents(registry) // the payment saga's (payment.go)

	fmt.Fprintf(stdout, "orders example: store=%s bus=%s\n", cfg.store, cfg.bus)
	if cfg.bus != "memory" {
		fmt.Fprintf(stdout, "connecting to %s ...\n", brokerAddress(cfg))
	}
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
	defer closeBus(ctx, b, cfg.timeout)

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
		return fmt.Errorf("start consuming on %s: %w", busLocationOr(b, cfg.bus), err)
	}

	repo := repository.New(store, b, newOrder, repository.WithLogger(logger),
		repository.WithSnapshots(eventstore.NewMemorySnapshots(), 100))
	if where := busLocation(b); where != "" {
		fmt.Fprintf(stdout, "events are on %s\n", where)
	}
	fmt.Fprintln(stdout)
	labels, err := walkthrough(ctx, stdout, repo)
	if err != nil {
		return err
	}

	// A broker-backed bus delivers asynchronously: wait until every
	// subscriber has seen its events before reading the results, saying
	// what is still missing while the wait lasts.
	progress := func() (string, bool) {
		a, n, p := len(audit.Entries()), len(notifier.Sent()), summary.Summary().Events
		return fmt.Sprintf("audit log %d/5 events, notifications %d/3, projection %d/5 events", a, n, p),
			a >= 5 && n >= 3 && p >= 5
	}
	if err := waitFor(ctx, cfg.timeout, progressEvery, stdout, progress); err != nil {
		state, _ := progress()
		return fmt.Errorf("waiting for handlers on %s (%s): %w", busLocationOr(b, cfg.bus), state, err)
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
	// The payment saga runs beside the tutorial, on orders of its own and
	// a bus of its own, so that the figures above stay the tutorial's.
	return paymentWalkthrough(ctx, cfg, stdout, store, registry, logger)
}

// closeBus closes b on the way out of a run that failed or was
// interrupted, within timeout. After Ctrl-C ctx is done and Close gives up
// at once: unbounded, it would wait for whatever the broker holds up (a
// Kafka group join waits for the group's other members), deaf to another
// Ctrl-C.
func closeBus(ctx context.Context, b bus.Bus, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_ = b.Close(ctx)
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

// progressEvery is how long a wait for handlers lasts before the example
// says what it is waiting for, and how often it says it again.
var progressEvery = 2 * time.Second

// waitFor polls state until it reports done or timeout passes. Every
// `every` it prints what it is still waiting for to w.
func waitFor(ctx context.Context, timeout, every time.Duration, w io.Writer, state func() (string, bool)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	say := time.NewTicker(every)
	defer say.Stop()
	for {
		s, done := state()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-say.C:
			fmt.Fprintf(w, "still waiting for the handlers (%s of %s): %s\n",
				time.Since(start).Round(time.Second), timeout, s)
		case <-tick.C:
		}
	}
}

func countStored(ctx context.Context, store eventstore.Store) (int, error) {
	n := 0
	for env, err := range store.ReadAll(ctx, 1) {
		if err != nil {
			return n, err
		}
		if !ofPaymentWalkthrough(env) { // the tutorial's history only
			n++
		}
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
