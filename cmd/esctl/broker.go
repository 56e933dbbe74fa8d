package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/internal/redact"
)

// broker is one bus as the operator sees it: its groups, their dead
// letters, broker-side figures, and a tail that disturbs no group.
type broker interface {
	kind() string
	// where says what the broker is, with no secret: for output.
	where() string
	// groups lists the consumer groups found on the broker, or the
	// configured ones.
	groups(ctx context.Context) ([]string, error)
	// admin returns the dead-letter admin API of one group.
	admin(ctx context.Context, group string) (consumer.Admin, error)
	// remove deletes the dead letters with these IDs, for a purge by
	// filter (consumer.Admin can only purge everything).
	remove(ctx context.Context, group string, recs []consumer.DeadLetter) (int, error)
	// stats returns what the broker knows of one group.
	stats(ctx context.Context, group string) (groupStats, error)
	// tail calls fn with each event published from now until ctx ends;
	// ready is called once it is listening.
	tail(ctx context.Context, ready func(), fn func(rawEvent)) error
	close()
}

// groupStats are broker-side figures of one consumer group. Fields a
// broker cannot tell are -1.
type groupStats struct {
	Bus         string `json:"bus"`
	Group       string `json:"group"`
	Events      int64  `json:"events"`       // events on the stream / topic (-1 on RabbitMQ: a queue keeps none)
	Backlog     int64  `json:"backlog"`      // published and not yet read by the group (lag)
	Pending     int64  `json:"pending"`      // read and not yet acknowledged
	Retrying    int64  `json:"retrying"`     // waiting in retry queues / topics (-1 where not countable)
	Consumers   int64  `json:"consumers"`    // members connected
	DeadLetters int64  `json:"dead_letters"` // records in the group's dead-letter destination
}

// rawEvent is an envelope as the wire carries it, decoded without the
// application's Go types: the payload stays JSON.
type rawEvent struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schema_version,omitempty"`
	AggregateType string          `json:"aggregate_type"`
	AggregateID   string          `json:"aggregate_id"`
	Version       int64           `json:"version"`
	Position      int64           `json:"position,omitempty"`
	OccurredAt    time.Time       `json:"occurred_at"`
	Metadata      json.RawMessage `json:"metadata,omitempty"`
	Data          json.RawMessage `json:"data"`
	Source        string          `json:"source,omitempty"` // stream, queue or topic/partition it was read from
}

// decodeEnvelope reads the wire format (README: "The wire format").
func decodeEnvelope(b []byte) (rawEvent, error) {
	var ev rawEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		return ev, fmt.Errorf("not an envelope: %w", err)
	}
	if ev.Type == "" {
		return ev, errors.New("not an envelope: no type")
	}
	return ev, nil
}

// openBroker connects to the configured bus.
func openBroker(ctx context.Context, e *env) (broker, error) {
	kind, err := e.busKind()
	if err != nil {
		return nil, err
	}
	logger := e.log.With(slog.String("bus", kind))
	switch kind {
	case "redis":
		if e.redisURL == "" {
			return nil, usagef("-redis-url (or EVENTSOURCE_REDIS_URL) is required for -bus redis")
		}
		return newRedisBroker(ctx, e, logger)
	case "rabbitmq":
		if e.amqpURL == "" {
			return nil, usagef("-amqp-url (or EVENTSOURCE_AMQP_URL) is required for -bus rabbitmq")
		}
		return newRabbitBroker(ctx, e, logger)
	default:
		if e.kafkaBrokers == "" {
			return nil, usagef("-kafka-brokers (or EVENTSOURCE_KAFKA_BROKERS) is required for -bus kafka")
		}
		return newKafkaBroker(ctx, e, logger)
	}
}

// emptyRegistry: the admin API moves bytes and never decodes a payload.
func emptyRegistry() *eventsource.Registry { return eventsource.NewRegistry() }

// busCache keeps one bus per group, for brokers whose admin API lives on
// a bus, and closes them all at the end.
type busCache[B interface{ Close(context.Context) error }] struct {
	mu    sync.Mutex
	buses map[string]B
	open  func(ctx context.Context, group string) (B, error)
}

func (c *busCache[B]) get(ctx context.Context, group string) (B, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.buses[group]; ok {
		return b, nil
	}
	b, err := c.open(ctx, group)
	if err != nil {
		return b, err
	}
	if c.buses == nil {
		c.buses = map[string]B{}
	}
	c.buses[group] = b
	return b, nil
}

func (c *busCache[B]) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, b := range c.buses {
		_ = b.Close(ctx)
	}
	c.buses = nil
}

// resolveGroups is -group, or what the broker has.
func resolveGroups(ctx context.Context, e *env, b broker) ([]string, error) {
	if gs := e.groupList(); len(gs) > 0 {
		return gs, nil
	}
	gs, err := b.groups(ctx)
	if err != nil {
		return nil, err
	}
	slices.Sort(gs)
	return slices.Compact(gs), nil
}

func redactedBrokers(s string) string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			if strings.Contains(p, "://") {
				p = redact.URL(p)
			}
			out = append(out, p)
		}
	}
	return strings.Join(out, ",")
}

// consumerDeadLetter, errNotFound and errBodyDropped are short names for
// the console.
type consumerDeadLetter = consumer.DeadLetter

var (
	errNotFound    = eventsource.ErrNotFound
	errBodyDropped = consumer.ErrBodyDropped
)
