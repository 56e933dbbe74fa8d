package bus

import "context"

// LagReporter is implemented by a broker bus that can ask its broker how
// far its consumer group is behind. The figures are the broker's, read
// when Lag is called (one or a few round trips), so a caller polls it at
// the pace of a metrics collection, not per event.
type LagReporter interface {
	// Lag returns the group's figures, one per kind the broker tells; a
	// destination that does not exist yet counts as empty.
	Lag(ctx context.Context) ([]Lag, error)
}

// Lag is one figure of a consumer group's lag, in messages.
type Lag struct {
	Kind     LagKind
	Messages int64
}

// LagKind names what a Lag counts. The set is small and fixed, so it can
// label a metric.
type LagKind string

// The kinds of lag the broker buses report.
const (
	// LagBacklog: published and not yet delivered to the group (Redis
	// stream lag).
	LagBacklog LagKind = "backlog"
	// LagPending: delivered to a member and not yet acknowledged (Redis
	// pending entries).
	LagPending LagKind = "pending"
	// LagConsumer: the log's end minus the group's committed offset,
	// summed over partitions (Kafka consumer lag): delivered and not yet
	// committed included.
	LagConsumer LagKind = "consumer"
	// LagQueueDepth: messages ready in the group's queue (RabbitMQ); AMQP
	// does not tell the unacknowledged ones.
	LagQueueDepth LagKind = "queue_depth"
)
