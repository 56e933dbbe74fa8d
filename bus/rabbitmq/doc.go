// Package rabbitmq is the RabbitMQ bus (github.com/rabbitmq/amqp091-go).
//
// # Topology
//
// Every event is published to one topic exchange (Config.Exchange) with
// the routing key "{aggregate_type}.{event_type}". Each consumer group has
//
//	{exchange}.{group}            the group's queue: its members compete for it
//	{exchange}.{group}.retry.{k}  delay queues, k = failed attempts so far
//	{exchange}.{group}.dlq        the group's dead letters
//
// The group's queue is bound only to what this member's handlers need:
// "*.{event_type}" per subscribed type, "#" for a wildcard subscription;
// bindings follow Subscribe and Unsubscribe. Type names that would break
// routing ('.', '*', '#', empty) are refused at registration: New installs
// ValidateTypeName on the Registry. Queues are durable unless
// Config.Transient, and quorum queues with Config.QuorumQueues.
//
// # Messages
//
// A message is persistent; its body is the envelope as
// eventsource.JSONCodec writes it, its message ID the event ID, its type
// the event type, and its headers
//
//	es-event-id, es-event-type, es-aggregate-type, es-aggregate-id,
//	es-aggregate-version      copies, for routing without decoding and for tools
//	traceparent, tracestate   the W3C trace context of the envelope's metadata
//
// A retried message also carries es-attempts (failed attempts so far),
// es-handlers (JSON array of the subscriptions that failed and run again)
// and es-last-error. A dead letter carries es-dead-letter-id (the record's
// ID in the admin API), es-reason (malformed, unknown_type, max_retries),
// es-error, es-attempts, es-group, es-handlers, es-dead-lettered-at
// (RFC 3339), es-source and es-source-id (where the event was first read;
// a replay keeps them, and so does the record it may come back as), with
// the original body, or without it and with es-dropped-size when the
// broker refused it: such a record is not replayed (consumer.ErrBodyDropped).
//
// # Publishing
//
// Publish uses PublishChannels channels in confirm mode (default 4) on
// one connection and pipelines: it sends the whole batch (up to
// ConfirmWindow unconfirmed messages in all), then waits once. Each event
// takes the channel its aggregate ID hashes to, so one aggregate's events
// reach the broker in publish order on one channel, while the broker
// handles the channels in parallel. With the mandatory flag (unless AllowUnroutable), a
// message no queue is bound for comes back and fails Publish with
// ErrUnroutable: publishing a type that no group subscribes to is an
// error, as is publishing before any group's first subscription. Nacked
// messages fail with ErrNacked. Messages whose confirmation was lost with
// the connection are published again on the next one (consumers may see
// them twice); if ctx ends or Close starts first they are reported with
// ErrUnconfirmed. Errors are *PublishError, naming each event.
//
// # Consuming
//
// Subscriptions are declared first; Start declares the group's queues,
// binds them for every declared type and starts a consumer with basic.qos
// Prefetch. Nothing is consumed before Start, so a durable queue's backlog
// waits for every handler to exist. The type header is a copy: a message
// whose header disagrees with its envelope is dead-lettered with reason
// type_mismatch. A Dispatcher (bus/consumer) runs the handlers;
// a message is acked once its handlers succeeded. Acks are batched with
// multiple=true up to the highest delivery tag below which every tag is
// settled. A failed event is published to the delay queue for its attempt
// count with a per-message TTL of the retry backoff, and the original is
// acked; when the TTL runs out the broker dead-letters it through the
// default exchange to the group's queue only, where it runs again for the
// failed handlers only. After Retry.MaxRetries attempts it goes to the
// group's dead-letter queue; the admin API (DeadLetters) lists, counts,
// replays (to this group's queue only, with a fresh retry budget) and
// purges them.
//
// # Connection loss
//
// A supervisor redials with backoff (ReconnectMin to ReconnectMax),
// redeclares the exchange, queues and bindings, and resumes consuming. The
// broker requeues what was delivered and not acked on the lost
// connection; handlers may see those events again.
//
// # Guarantees and limits
//
//   - At-least-once: redeliveries after a lost connection or a crashed
//     member, and republished unconfirmed messages, can repeat an event.
//   - Order per aggregate holds within one member while nothing fails: a
//     retried event comes back after the events that followed it, and a
//     requeued delivery may overtake later ones. Members of one group share
//     the queue, so two members can run events of one aggregate
//     concurrently; use one member per group where order across processes
//     matters.
//   - No persistence before the group exists: its queue exists from its
//     first Start; events published before are not delivered to it
//     (with the mandatory flag, publishing them fails if no queue at all
//     wants them).
//   - Members of one group must subscribe to the same types: the group's
//     queue is bound for the union, and a member with no handler for a
//     type acks it without running anything.
//   - A classic queue does not count deliveries, so a redelivered message
//     counts as one more attempt; a quorum queue's x-delivery-count is
//     used when present.
//   - Retry waits are rounded per delay queue only by head-of-line order:
//     each queue holds one attempt count, so waits in it differ only by
//     jitter.
package rabbitmq
