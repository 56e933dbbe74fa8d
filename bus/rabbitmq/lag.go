package rabbitmq

import (
	"context"
	"fmt"

	"github.com/eventsource-go/eventsource/bus"
)

var _ bus.LagReporter = (*Bus)(nil)

// Lag returns the depth of the group's queue: the messages ready for its
// members, from a passive declare on a short-lived channel. AMQP does not
// tell the delivered and unacknowledged ones (RabbitMQ's management API
// does). A queue that does not exist yet counts as empty.
func (b *Bus) Lag(ctx context.Context) ([]bus.Lag, error) {
	_, ch, err := admin{b}.channel(ctx)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq bus: lag of group %q: %w", b.cfg.Group, err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(b.names.Queue, !b.cfg.Transient, false, false, false, nil)
	if notFound(err) {
		return []bus.Lag{{Kind: bus.LagQueueDepth}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rabbitmq bus: lag of group %q: queue %s: %w", b.cfg.Group, b.names.Queue, err)
	}
	return []bus.Lag{{Kind: bus.LagQueueDepth, Messages: int64(q.Messages)}}, nil
}
