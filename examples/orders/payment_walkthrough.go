package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/repository"
	"github.com/eventsource-go/eventsource/saga"
)

// paymentOrderPrefix starts the IDs of the payment walkthrough's orders,
// which the tutorial's store history leaves out (its figures stay those
// of the tutorial's own orders).
const paymentOrderPrefix = "paid-order-"

// ofPaymentWalkthrough reports whether env was stored by the payment
// walkthrough.
func ofPaymentWalkthrough(env eventsource.Envelope) bool {
	return env.AggregateType == "Payment" || strings.HasPrefix(env.AggregateID, paymentOrderPrefix)
}

// openSagaStore returns where the saga keeps its instances and deadlines:
// beside the events, in the store -store chose.
func openSagaStore(ctx context.Context, cfg config) (saga.Store, func(), error) {
	switch cfg.store {
	case "sqlite":
		s, err := saga.OpenSQLite(ctx, cfg.sqlitePath)
		if err != nil {
			return nil, nil, err
		}
		return s, func() { _ = s.Close() }, nil
	case "postgres":
		pool, err := pgxpool.New(ctx, cfg.postgresURL)
		if err != nil {
			return nil, nil, fmt.Errorf("postgres: %w", err)
		}
		s, err := saga.NewPostgresStore(ctx, pool)
		if err != nil {
			pool.Close()
			return nil, nil, err
		}
		return s, pool.Close, nil
	}
	return saga.NewMemoryStore(), func() {}, nil
}

// demoClock is the saga's clock: the walkthrough moves it forward instead
// of waiting a quarter of an hour.
type demoClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *demoClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *demoClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// paymentFigures counts what the saga did.
type paymentFigures struct {
	mu                        sync.Mutex
	requested, paid, declined int
	cancelled                 map[string]int // by reason
	commands                  map[string]int // by type
}

func (f *paymentFigures) Handle(_ context.Context, env eventsource.Envelope) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch e := env.Event.(type) {
	case PaymentRequested:
		f.requested++
	case PaymentReceived:
		f.paid++
	case PaymentDeclined:
		f.declined++
	case OrderCancelled:
		f.cancelled[e.Reason]++
	}
	return nil
}

func (f *paymentFigures) counting(d saga.Dispatcher) saga.Dispatcher {
	return saga.DispatcherFunc(func(ctx context.Context, c saga.PendingCommand) error {
		if err := d.Dispatch(ctx, c); err != nil {
			return err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.commands[c.Type]++
		return nil
	})
}

func (f *paymentFigures) snapshot() (requested, paid, declined, cancelled int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.cancelled {
		cancelled += n
	}
	return f.requested, f.paid, f.declined, cancelled
}

// paymentWalkthrough runs the payment saga on three orders of its own, on
// a bus of the kind -bus chose (a fresh one: the tutorial's bus figures
// stay its own) and on the store -store chose: order 1 is paid, order 2's
// payment is declined and the saga cancels it, order 3 is never paid and
// the saga cancels it when its deadline fires.
func paymentWalkthrough(ctx context.Context, cfg config, w io.Writer, store eventstore.Store,
	registry *eventsource.Registry, logger *slog.Logger) error {
	sagaStore, closeSagaStore, err := openSagaStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeSagaStore()
	b, cleanupBus, err := openBus(ctx, cfg, registry, logger)
	if err != nil {
		return err
	}
	defer cleanupBus()
	defer closeBus(ctx, b, cfg.timeout)

	orders := repository.New(store, b, newOrder, repository.WithLogger(logger))
	payments := repository.New(store, b, newPayment, repository.WithLogger(logger))
	figures := &paymentFigures{cancelled: map[string]int{}, commands: map[string]int{}}
	clock := &demoClock{}
	runner := saga.NewRunner(newPaymentSaga(), sagaStore, figures.counting(paymentCommands(orders, payments)),
		saga.WithClock(clock.Now), saga.WithLogger(logger), saga.WithPollInterval(10*time.Millisecond))
	if _, err := saga.Subscribe(b, runner); err != nil {
		return err
	}
	if m, ok := b.(bus.MultiTypeSubscriber); ok {
		types := []string{"PaymentRequested", "PaymentReceived", "PaymentDeclined", "OrderCancelled"}
		if _, err := m.SubscribeTypes(types, figures, bus.WithName("payment-figures")); err != nil {
			return err
		}
	}
	if err := b.Start(ctx); err != nil {
		return fmt.Errorf("start consuming on %s: %w", busLocationOr(b, cfg.bus), err)
	}
	deadlines, stopDeadlines := context.WithCancel(ctx)
	deadlinesDone := make(chan struct{})
	go func() { defer close(deadlinesDone); _ = runner.RunDeadlines(deadlines) }()
	defer func() { stopDeadlines(); <-deadlinesDone }()

	fmt.Fprintln(w, "\npayment saga:")
	run := uuid.NewString()[:8]
	ids := make([]string, 3)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%s-%d", paymentOrderPrefix, run, i+1)
		o := newOrder()
		o.SetID(ids[i])
		if err := o.Place("pat@example.com", int64(1000*(i+1))); err != nil {
			return err
		}
		if err := orders.Save(ctx, o); err != nil {
			return err
		}
		if i == 0 {
			// The bus delivers at least once: deliver order 1's event
			// again; the saga requests its payment once all the same.
			var placed []eventsource.Envelope
			for env, err := range store.Load(ctx, eventsource.StreamID("Order", ids[0]), 1) {
				if err != nil {
					return err
				}
				placed = append(placed, env)
			}
			if err := b.Publish(ctx, placed...); err != nil {
				return err
			}
		}
	}
	fmt.Fprintln(w, "  placed orders 1, 2 and 3 (order 1's event delivered twice)")

	wait := func(what string, done func() bool) error {
		return waitFor(ctx, cfg.timeout, progressEvery, w, func() (string, bool) { return what, done() })
	}
	if err := wait("3 payment requests", func() bool { r, _, _, _ := figures.snapshot(); return r >= 3 }); err != nil {
		return fmt.Errorf("payment saga: %w", err)
	}
	settle := func(id string, act func(*Payment) error) error {
		p, err := payments.Load(ctx, id)
		if err != nil {
			return err
		}
		if err := act(p); err != nil {
			return err
		}
		return payments.Save(ctx, p)
	}
	if err := settle(ids[0], (*Payment).Receive); err != nil {
		return err
	}
	if err := settle(ids[1], func(p *Payment) error { return p.Decline("card expired") }); err != nil {
		return err
	}
	fmt.Fprintln(w, "  order 1 paid, order 2's payment declined, order 3 not paid")
	// Ended, with its commands dispatched: the clock jump below must not
	// find a dispatch in flight, whose claim it would expire.
	ended := func(id string) bool {
		inst, err := sagaStore.Load(ctx, "payment", id)
		return err == nil && inst.Ended && len(inst.Outbox) == 0
	}
	if err := wait("the saga to settle orders 1 and 2", func() bool {
		_, _, _, c := figures.snapshot()
		return c >= 1 && ended(ids[0]) && ended(ids[1])
	}); err != nil {
		return fmt.Errorf("payment saga: %w", err)
	}
	clock.Advance(PaymentTimeout)
	fmt.Fprintf(w, "  %s pass (on the saga's clock)\n", PaymentTimeout)
	if err := wait("the payment timeout of order 3", func() bool {
		_, _, _, c := figures.snapshot()
		return c >= 2 && ended(ids[2])
	}); err != nil {
		return fmt.Errorf("payment saga: %w", err)
	}
	closeCtx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if err := b.Close(closeCtx); err != nil {
		return fmt.Errorf("close bus: %w", err)
	}

	requested, paid, declined, _ := figures.snapshot()
	figures.mu.Lock()
	defer figures.mu.Unlock()
	fmt.Fprintf(w, "\npayment saga figures:\n")
	fmt.Fprintf(w, "  payments requested: %d\n", requested)
	fmt.Fprintf(w, "  paid: %d, declined: %d, timed out: %d\n", paid, declined, figures.cancelled[reasonTimeout])
	fmt.Fprintf(w, "  orders cancelled by the saga: %d (%d %s, %d %s)\n", figures.cancelled[reasonDeclined]+figures.cancelled[reasonTimeout],
		figures.cancelled[reasonDeclined], reasonDeclined, figures.cancelled[reasonTimeout], reasonTimeout)
	fmt.Fprintf(w, "  commands dispatched: %d RequestPayment, %d CancelOrder\n", figures.commands["RequestPayment"], figures.commands["CancelOrder"])
	return nil
}
