// Package kafka is the Kafka bus (github.com/segmentio/kafka-go).
//
// # Topics
//
// Events go to Config.Topic (or, with TopicPerAggregateType, to
// <Topic>.<aggregate type>), keyed by aggregate ID and partitioned by the
// key's murmur2 hash as Kafka's Java producer does, so one aggregate's
// events stay in order on one partition. Each consumer group has two
// topics of its own:
//
//	<Topic>.retry.<Group>  events whose handlers failed, due again after a backoff
//	<Topic>.dlq.<Group>    the group's dead letters (one partition)
//
// A published event is one record: the key is the aggregate ID, the value
// the envelope as eventsource.JSONCodec writes it, and the headers
//
//	es-event-id, es-event-type, es-aggregate-type, es-aggregate-id, es-version
//	content-type   application/json
//	traceparent, tracestate   the W3C trace context, when the envelope has one
//
// are copies for routing and inspection; the value is the truth. A record
// no local handler wants, by es-event-type, has only its envelope's type
// read before it is committed; one whose es-event-type disagrees with its
// envelope is dead-lettered with reason type_mismatch. A retried event carries its original headers plus es-attempt
// (the delivery it will be), es-retry-at (Unix milliseconds), es-handlers
// (JSON array of the subscriptions that failed), es-error, and
// es-origin-topic, es-origin-partition, es-origin-offset: where it was
// first read. A dead letter has the original value and es-reason
// (malformed, unknown_type, max_retries, type_mismatch, unknown_handler or
// retry_refused), es-error, es-attempts, es-group, es-handlers, es-time
// (RFC 3339) and the origin headers; its key, "topic:partition:offset" of
// the message last consumed (the events or the retry topic), is its ID in
// the admin API. A record the client or broker
// refuses for its size is stored without the original value, with
// es-dropped-size: the origin headers say where the bytes are. Such
// refusals are never retried, so one oversized record cannot stall a
// worker or a partition's commit point.
// Replaying or purging a record, or removing it by ID
// (Bus.RemoveDeadLetters, a purge by filter), appends a tombstone for that
// key (header es-tombstone, null value); a record without its value is
// not replayed (consumer.ErrBodyDropped).
//
// # Consuming
//
// Subscriptions are declared first; Start joins the group (kafka-go's
// ConsumerGroup) on the events topics and the retry topic, so no record of
// a declared type is committed before its handler exists. A new group starts at the oldest
// offset. Each assigned partition has its own reader; its events go to a
// Dispatcher (bus/consumer), which runs events of one aggregate in order
// and different aggregates concurrently. Events finish out of order, so
// each partition keeps the offsets it dispatched, and the committed offset
// only moves past offsets that are settled (handled, rescheduled to the
// retry topic, or dead-lettered): a crash re-delivers from the first
// unsettled event and never skips one. Commits go out every
// CommitInterval and when a partition is let go.
//
// A failed event is written to the retry topic with its due time and
// acknowledged on its own partition, which keeps flowing; the retry
// partition's reader holds it until due. After Retry.MaxRetries attempts
// it is dead-lettered. Bytes that do not decode, or an unregistered type,
// are dead-lettered at once.
//
// On a rebalance or at Close, a member stops fetching the partitions it
// loses, waits up to DrainTimeout for their dispatched events to settle,
// commits, and only then lets the group go on, so that the next owner
// starts after what was handled.
//
// # Guarantees and limits
//
//   - At-least-once. Duplicates come from a member that crashed (or lost
//     its session) after handling events and before committing them, from
//     events still running after DrainTimeout (Abandoned counts them), and
//     from a failure between writing a retry or dead letter and committing.
//   - Order per aggregate holds while handlers succeed. A retried event is
//     handled after the events of its aggregate that followed it.
//   - The retry topic is read in order: an event due later holds back the
//     ones behind it on its retry partition, so a delay can be longer than
//     its backoff when backoffs differ.
//   - Replay delivers to this group only (through its retry topic). Replay
//     and its tombstone are two writes: a failure between them, or two
//     admins replaying the same record at once, can deliver it twice.
//   - The admin API reads the whole dead-letter topic on every call.
//   - Publish waits up to BatchTimeout for concurrent publishers' events to
//     share a produce request. Publish returning an error does not mean
//     nothing was written.
//   - kafka-go retries a write on its own, whatever the caller's ctx: up
//     to 23 attempts, about 5s of backoff in all between attempts that
//     fail at once (a broker restarting), each attempt waiting up to 10s
//     for a broker that does not answer. Close bounds that: when its ctx
//     ends it cuts off the bus's connections, so that what is still in
//     flight or being retried fails (bus.ErrClosed), and returns at most
//     one backoff (250ms) after its ctx's deadline.
//   - Stats.Reclaimed stays 0: Kafka does not tell a member which of the
//     events it reads were handled elsewhere before.
package kafka
