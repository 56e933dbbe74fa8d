package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource/bus/consumer"
	rabbitbus "github.com/eventsource-go/eventsource/bus/rabbitmq"
	"github.com/eventsource-go/eventsource/internal/redact"
)

// hDeadLetterID is the header that carries a dead letter's ID (see the
// rabbitmq package documentation).
const hDeadLetterID = "es-dead-letter-id"

type rabbitBroker struct {
	e     *env
	conn  *amqp.Connection
	buses busCache[*rabbitbus.Bus]
}

func newRabbitBroker(ctx context.Context, e *env, logger *slog.Logger) (*rabbitBroker, error) {
	conn, err := amqp.DialConfig(e.amqpURL, amqp.Config{Properties: amqp.Table{"connection_name": "esctl"}})
	if err != nil {
		return nil, fmt.Errorf("rabbitmq %s: %w", redact.URL(e.amqpURL), err)
	}
	b := &rabbitBroker{e: e, conn: conn}
	b.buses.open = func(ctx context.Context, group string) (*rabbitbus.Bus, error) {
		return rabbitbus.New(ctx, rabbitbus.Config{
			URL: e.amqpURL, Registry: emptyRegistry(), Exchange: e.exchange, Group: group,
			Logger: logger, ConnectionName: "esctl/" + group,
		})
	}
	return b, nil
}

func (b *rabbitBroker) kind() string { return "rabbitmq" }
func (b *rabbitBroker) where() string {
	return fmt.Sprintf("rabbitmq %s exchange %s", redact.URL(b.e.amqpURL), b.e.exchange)
}

// groups: AMQP cannot list queues (that is the management plugin's HTTP
// API), so without -group the default group is meant.
func (b *rabbitBroker) groups(context.Context) ([]string, error) { return []string{"default"}, nil }

func (b *rabbitBroker) names(group string) rabbitbus.Names {
	return rabbitbus.Config{Exchange: b.e.exchange, Group: group}.Names()
}

func (b *rabbitBroker) admin(ctx context.Context, group string) (consumer.Admin, error) {
	bus, err := b.buses.get(ctx, group)
	if err != nil {
		return nil, err
	}
	return bus.DeadLetters(), nil
}

// remove takes every record of the dead-letter queue without
// acknowledging it, acknowledges those to delete, and closes the channel:
// the broker puts the others back where they were.
func (b *rabbitBroker) remove(ctx context.Context, group string, recs []consumer.DeadLetter) (int, error) {
	want := map[string]bool{}
	for _, r := range recs {
		want[r.ID] = true
	}
	ch, err := b.conn.Channel()
	if err != nil {
		return 0, fmt.Errorf("rabbitmq: %w", err)
	}
	defer ch.Close()
	q := b.names(group).DeadLetterQueue
	removed := 0
	for len(want) > 0 && ctx.Err() == nil {
		d, ok, err := ch.Get(q, false)
		if err != nil {
			return removed, fmt.Errorf("rabbitmq: read %s: %w", q, err)
		}
		if !ok {
			break
		}
		id, _ := d.Headers[hDeadLetterID].(string)
		if !want[id] {
			continue
		}
		if err := d.Ack(false); err != nil {
			return removed, fmt.Errorf("rabbitmq: delete dead letter %s: %w", id, err)
		}
		delete(want, id)
		removed++
	}
	return removed, ctx.Err()
}

// queue returns a queue's depth and consumers; a missing queue is zero.
func (b *rabbitBroker) queue(name string) (msgs, consumers int64, err error) {
	ch, err := b.conn.Channel()
	if err != nil {
		return 0, 0, fmt.Errorf("rabbitmq: %w", err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
	if err != nil {
		var aerr *amqp.Error
		if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
			return 0, 0, nil
		}
		return 0, 0, fmt.Errorf("rabbitmq: queue %s: %w", name, err)
	}
	return int64(q.Messages), int64(q.Consumers), nil
}

func (b *rabbitBroker) stats(_ context.Context, group string) (groupStats, error) {
	n := b.names(group)
	st := groupStats{Bus: "rabbitmq", Group: group, Events: -1, Pending: -1}
	var err error
	if st.Backlog, st.Consumers, err = b.queue(n.Queue); err != nil {
		return st, err
	}
	for _, rq := range n.RetryQueues {
		m, _, err := b.queue(rq)
		if err != nil {
			return st, err
		}
		st.Retrying += m
	}
	if st.DeadLetters, _, err = b.queue(n.DeadLetterQueue); err != nil {
		return st, err
	}
	return st, nil
}

// tail binds an exclusive, server-named queue to the exchange for every
// routing key: the broker deletes it when the connection closes, and no
// group's queue is touched.
func (b *rabbitBroker) tail(ctx context.Context, ready func(), fn func(rawEvent)) error {
	ch, err := b.conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: %w", err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclare("", false, true, true, false, amqp.Table{"x-queue-type": "classic"})
	if err != nil {
		return fmt.Errorf("rabbitmq: declare tail queue: %w", err)
	}
	if err := ch.QueueBind(q.Name, "#", b.e.exchange, false, nil); err != nil {
		return fmt.Errorf("rabbitmq: bind tail queue to %s: %w", b.e.exchange, err)
	}
	// Not ConsumeWithContext: on ctx.Done it sends basic.cancel from its
	// own goroutine, racing the deferred Close for the channel's one RPC
	// reply slot, and Close can then wait for ever for its close-ok.
	deliveries, err := ch.Consume(q.Name, "esctl-tail", true, true, false, false, nil)
	if err != nil {
		return fmt.Errorf("rabbitmq: consume tail queue: %w", err)
	}
	ready()
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-deliveries:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("rabbitmq: tail: the broker closed the channel")
			}
			ev, err := decodeEnvelope(d.Body)
			if err != nil {
				ev.Type = d.RoutingKey
			}
			ev.Source = b.e.exchange + " " + d.RoutingKey
			fn(ev)
		}
	}
}

func (b *rabbitBroker) close() {
	b.buses.closeAll()
	_ = b.conn.Close()
}
