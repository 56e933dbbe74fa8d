// Package redis is the Redis Streams bus (github.com/redis/go-redis/v9).
// It needs Redis 6.2 or later (XAUTOCLAIM, exclusive XRANGE bounds).
//
// # Layout
//
// All keys of one bus share the hash tag of its StreamPrefix, so that they
// live in one Redis Cluster slot and one XREADGROUP can read two of them:
//
//	{prefix}:events          every published event, in publish order
//	{prefix}:replay:<group>  dead letters replayed for one group only
//	{prefix}:dlq:<group>     one group's dead letters
//
// A published event is one entry of {prefix}:events with the fields
//
//	id        event ID (UUID v7)
//	type      event type name
//	agg_type  aggregate type
//	agg_id    aggregate ID
//	version   aggregate version, decimal
//	envelope  the envelope, as eventsource.JSONCodec writes it
//
// The first five are copies for routing and inspection (XRANGE, redis-cli);
// consumers decode only the envelope. A dead letter is an entry of the
// group's dead-letter stream with the same fields plus reason (malformed,
// unknown_type or max_retries), error, attempts, group, handlers (JSON
// array of the subscriptions that failed), time (RFC 3339), source and
// source_id (the stream and entry it came from; a replayed event that
// fails again keeps those of its first record), and dropped_size when
// Redis refused the record with its envelope and it was stored without
// it. Replay moves the entry, all fields kept, to the group's replay
// stream, atomically; an entry with dropped_size stays, having nothing to
// deliver (consumer.ErrBodyDropped).
//
// # Consuming
//
// Subscriptions are declared first; Start creates the group on the events
// and replay streams from the start ("0", MKSTREAM), so a group created
// late catches up on the backlog, then reads both streams with XREADGROUP:
// first what is pending under its Consumer name already (left by its
// earlier process), then new entries. A read whose reply is lost with its
// connection is not sent again: the member reads what is pending under its
// name after the last entry it saw, then reads on, so those entries come
// at once and in order. Nothing is read before Start, so no entry of a declared type is
// acknowledged before its handler exists. Members of one group share the entries; every group gets
// every entry. A Dispatcher (bus/consumer) runs the handlers; an entry is
// XACKed once its handlers succeeded or it was dead-lettered, acks batched.
// Entries left pending longer than ClaimIdle by a member that stopped are
// taken over by XAUTOCLAIM, run by every member every ClaimInterval; their
// delivery count counts as attempts, so a message that keeps killing its
// consumers is dead-lettered after Retry.MaxRetries deliveries. A member
// never dispatches again an entry it holds (XAUTOCLAIM also returns a
// member's own idle entries), and every ClaimIdle/4 it resets the idle
// time of what it holds (XCLAIM JUSTID, which leaves the delivery count
// alone), so a long handler or a wait for a retry keeps its entry from
// other members for as long as it lasts.
//
// The envelope field is the truth; the others are copies. An entry whose
// type field disagrees with its envelope's type (in content or in case)
// is dead-lettered with reason type_mismatch; an entry of a type no local
// handler wants has its envelope's type read (not its payload) before it
// is acknowledged.
//
// # Guarantees and limits
//
//   - At-least-once: a handler can see an event again after a crash, a
//     reclaim, or a Close that released events waiting for a retry.
//   - Order per aggregate holds within one bus instance. Redis hands the
//     entries of a stream to the members of a group in turn, so two
//     members of one group can run events of one aggregate concurrently;
//     use one member per group where that order matters across processes.
//   - A replayed dead letter comes after the events that followed it.
//   - A member that cannot reach Redis for longer than ClaimIdle/2 cannot
//     keep its entries fresh: another member may claim them and run them
//     a second time.
//   - A bus reads from Start until Close, even with every subscription
//     removed: entries no handler wants are acknowledged.
//   - The admin API (DeadLetters) works while the bus is open.
//   - MaxLen trimming is approximate and deletes entries whether or not
//     every group has read them; it is off by default.
package redis
