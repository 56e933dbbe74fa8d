// Package consumer is the consumer side shared by the broker-backed buses
// (bus/redis, bus/rabbitmq, bus/kafka): the transport reads messages from
// its broker and hands them to a Dispatcher; the Dispatcher decodes them
// with the Registry, routes them to local handlers, retries failures and
// tells the transport, through a Settler, to acknowledge or dead-letter.
//
// # Ordering and concurrency
//
// A Dispatcher runs a fixed pool of workers. A message goes to the worker
// chosen by a hash of its aggregate ID, so events of one aggregate are
// handled one after another in the order the transport dispatched them,
// while events of other aggregates run on the other workers.
//
// # Retries
//
// When handlers fail, only the failed handlers are retried (a healthy
// sibling sees the event once), after a backoff given by RetryPolicy. The
// worker does not sleep meanwhile: the event is parked, and later events of
// the same aggregate are held back behind it, so per-aggregate order holds,
// while events of other aggregates, on that worker too, keep flowing. When
// the event is finally handled or dead-lettered, the held events run in
// order. After RetryPolicy.MaxRetries failed attempts the event is
// dead-lettered with ReasonMaxRetries; bytes that do not decode, or an
// unregistered type, are dead-lettered at once with ReasonMalformed or
// ReasonUnknownType. A message is acknowledged only after its handlers
// succeeded or it was dead-lettered.
//
// # What is never acknowledged silently
//
// The envelope is the truth; Message.Type is the transport's copy (a
// stream field, a header). A message whose copy disagrees with its
// envelope is dead-lettered with ReasonTypeMismatch. One that no local
// handler wants by its copy has its envelope's type read, not its payload,
// before it is acknowledged. A retry or replay naming handlers that are not
// subscribed here is dead-lettered with ReasonUnknownHandler and the names,
// rather than run by the others and acknowledged. A broker's permanent
// refusal (ErrRefused) is never retried: a dead letter too large is stored
// without its bytes, a refused retry is dead-lettered.
//
// # Handler identity
//
// A subscription's name is its identity in retries and dead letters:
// without bus.WithName it is its sorted event types joined by commas ("*"
// for a wildcard), and a second subscription under a name in use is
// refused. Front gives a broker bus the subscription API and the explicit
// start (bus.Bus, Lifecycle) over a Dispatcher.
//
// # Close
//
// Close finishes the events already handed to the workers and acknowledges
// them. Events waiting for a retry, and events held back behind them, are
// released unacknowledged (Settler.Release), so the broker redelivers them;
// their handlers may then run again (at-least-once).
package consumer
