// Package otel instruments the eventsource framework with OpenTelemetry
// traces and metrics. It is a module of its own, so a program that does
// not import it never compiles OpenTelemetry; it depends on the
// OpenTelemetry API only, and the application chooses the SDK and
// exporters.
//
// One Telemetry serves a process. Per bus, Telemetry.Bus returns a
// BusTelemetry whose Middleware goes into the bus's configuration and whose
// Wrap decorates the bus once it exists:
//
//	bt := tel.Bus(otel.SystemRedis, cfg.Group)
//	cfg.Middleware = append(cfg.Middleware, bt.Middleware())
//	rb, err := redis.New(ctx, cfg)
//	b := bt.Wrap(rb) // give b, not rb, to repositories and relays
//
// and repositories take WithInstrumentation(tel.Repository()).
//
// # Traces
//
// Save starts a span ("save <aggregate type>") under the caller's active
// span, with a child for the store's append, and writes the save span's
// W3C trace context into the metadata of the events it stores. Publishing
// through a wrapped bus starts a producer span per event ("publish <event
// type>") under the caller's active span or, when there is none (the
// outbox relay), under the context stored with the event, and sends the
// producer span's context with the event. Each handler run is a consumer
// span ("process <event type>") whose parent is that context, on every
// bus, and the handler's ctx carries it, so whatever the handler saves or
// publishes joins the trace. Attribute names follow OpenTelemetry's
// messaging semantic conventions (messaging.system, messaging.operation.*,
// messaging.destination.name (the event type), messaging.consumer.group.name,
// messaging.message.id (the event ID)). Projections (Projection,
// SQLProjection) and sagas fed from the store (SagaMiddleware) get the
// same consumer spans; SagaDeadlines traces the deadlines a saga fires.
//
// A span's name and kind are given when it starts and its attributes are
// set once it records, so a sampler that drops the trace costs no
// attribute work; the samplers OpenTelemetry's SDK ships decide on the
// parent and the trace ID alone.
//
// # Metrics
//
// The middleware records messaging.process.duration and the end-to-end
// latency from the event's OccurredAt (eventsource.event.latency, 0 when
// the producer's clock is ahead), by system, group, event type, handler
// (the subscription's name, from bus.SubscriptionOf) and outcome, with
// messaging.operation.name, and error.type on a failed run, as the
// conventions require. A wrapped bus records
// messaging.client.operation.duration per Publish call, and reports the
// bus's Stats as observable instruments, read at collection and free per
// event: messaging.client.sent.messages (events the bus accepted) and
// counters eventsource.bus.* (received, delivered, handled, handler
// invocations, errors and panics, retries, dead-lettered, dropped,
// reclaimed, reconnects) and gauges (in flight, background tasks), and,
// for a broker bus, what the broker says
// of its group's lag (eventsource.broker.lag, by eventsource.lag.kind:
// bus.LagReporter). ObserveFollower reports a projection's or relay's lag.
// No attribute carries an event, aggregate or message ID, so the number
// of series stays bounded by the types, handlers and groups.
package otel
