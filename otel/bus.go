package otel

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// BusTelemetry instruments one bus: its Middleware goes into the bus's
// configuration (Config.Middleware on a broker bus,
// bus.WithHandlerMiddleware on the in-process bus), and Wrap decorates the
// bus for the producer side and its Stats.
type BusTelemetry struct {
	t      *Telemetry
	labels *labels
	// The publish-duration attributes, without and with an error.
	publishOK, publishFailed measure
}

// Bus returns the instrumentation of a bus of the given system (one of
// the System constants) and consumer group ("" for the in-process bus).
func (t *Telemetry) Bus(system, group string) *BusTelemetry {
	base := []attribute.KeyValue{semconv.MessagingSystemKey.String(system)}
	if group != "" {
		base = append(base, semconv.MessagingConsumerGroupName(group))
	}
	return t.busWith(base)
}

func (t *Telemetry) busWith(base []attribute.KeyValue) *BusTelemetry {
	l := newLabels(base)
	publish := semconv.MessagingOperationName("publish")
	return &BusTelemetry{t: t, labels: l,
		publishOK:     l.withBase(publish),
		publishFailed: l.withBase(publish, semconv.ErrorTypeOther),
	}
}

// Wrap returns b decorated: Publish (and PublishAsync, when b has it)
// starts a producer span per event and sends its context with the event
// (the envelope's TraceParent and TraceState are replaced with the
// producer span's, in the same trace; the caller's envelopes are not
// modified), and b's Stats are reported as observable instruments until
// Close, with the broker's lag when b (or the bus it decorates) is a
// bus.LagReporter: eventsource.broker.lag by kind, asked of the broker at
// every collection (each read bounded by WithLagTimeout and ended by
// Close; a failed one is left out of that collection and handed to
// otel.Handle).
// Everything else is b's. bus.Unwrap returns b, for what only b offers
// (a broker bus's DeadLetters).
func (bt *BusTelemetry) Wrap(b bus.Bus) bus.Bus {
	w := &Bus{bt: bt, inner: b}
	w.closing, w.cancelClosing = context.WithCancel(context.Background())
	// Registering fails only with a meter the instruments are not from;
	// the bus works without them.
	sent := attribute.NewSet(bt.labels.attrs(semconv.MessagingOperationName("publish"))...)
	if reg, err := bt.t.observeStats(b, attribute.NewSet(bt.labels.base...), sent); err == nil {
		w.regs = append(w.regs, reg)
	}
	if lr, ok := lagReporter(b); ok {
		if reg, err := bt.t.observeLag(lr, bt.labels.base, w.closing); err == nil {
			w.regs = append(w.regs, reg)
		}
	}
	if bg, ok := b.(bus.BackgroundPublisher); ok {
		return &backgroundBus{Bus: w, bg: bg}
	}
	return w
}

// Bus is a bus decorated by BusTelemetry.Wrap.
type Bus struct {
	bt    *BusTelemetry
	inner bus.Bus
	regs  []metric.Registration // the observable instruments' callbacks
	// closing ends when Close starts, and with it a lag read in progress:
	// unregistering waits for the collection that runs it.
	closing       context.Context
	cancelClosing context.CancelFunc
}

// lagReporter returns b as a bus.LagReporter, or the bus it decorates.
func lagReporter(b bus.Bus) (bus.LagReporter, bool) {
	if lr, ok := b.(bus.LagReporter); ok {
		return lr, true
	}
	lr, ok := bus.Unwrap(b).(bus.LagReporter)
	return lr, ok
}

var _ bus.MultiTypeSubscriber = (*Bus)(nil)

// Unwrap returns the decorated bus.
func (b *Bus) Unwrap() bus.Bus { return b.inner }

// Publish publishes events on the decorated bus, each under a producer span.
func (b *Bus) Publish(ctx context.Context, events ...eventsource.Envelope) error {
	return b.publish(ctx, b.inner.Publish, events)
}

// Subscribe subscribes on the decorated bus.
func (b *Bus) Subscribe(eventType string, h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return b.inner.Subscribe(eventType, h, opts...)
}

// SubscribeAll subscribes on the decorated bus.
func (b *Bus) SubscribeAll(h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return b.inner.SubscribeAll(h, opts...)
}

// SubscribeTypes subscribes on the decorated bus as one subscription when
// it can, one per type otherwise (as bus.SubscribeProjection does).
func (b *Bus) SubscribeTypes(eventTypes []string, h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return bus.SubscribeProjection(b.inner, typesProjection{Handler: h, types: eventTypes}, opts...)
}

type typesProjection struct {
	bus.Handler
	types []string
}

func (p typesProjection) EventTypes() []string { return p.types }

// Start starts the decorated bus.
func (b *Bus) Start(ctx context.Context) error { return b.inner.Start(ctx) }

// Stats returns the decorated bus's.
func (b *Bus) Stats() bus.Stats { return b.inner.Stats() }

// Close stops reporting the bus's Stats and lag, and closes it.
func (b *Bus) Close(ctx context.Context) error {
	b.cancelClosing()
	for _, r := range b.regs {
		_ = r.Unregister() // fails only for a registration already gone
	}
	return b.inner.Close(ctx)
}

type backgroundBus struct {
	*Bus
	bg bus.BackgroundPublisher
}

// PublishAsync queues events on the decorated bus, each under a producer
// span that ends when the bus has accepted it.
func (b *backgroundBus) PublishAsync(ctx context.Context, events ...eventsource.Envelope) error {
	return b.publish(ctx, b.bg.PublishAsync, events)
}

// publish starts a producer span per event, stamps its context on a copy
// of the event, and publishes the copies with fn.
func (b *Bus) publish(ctx context.Context, fn func(context.Context, ...eventsource.Envelope) error, events []eventsource.Envelope) error {
	t, l := b.bt.t, b.bt.labels
	start := time.Now()
	if !t.tracing {
		err := fn(ctx, events...)
		b.recordPublish(ctx, start, err)
		return err
	}
	// The caller's span is the parent; without one (the outbox relay, a
	// background job) each event continues the trace it was saved in.
	callerSpan := trace.SpanContextFromContext(ctx).IsValid()
	out := make([]eventsource.Envelope, len(events))
	var buf [16]trace.Span // on the stack for the usual batch
	spans := buf[:0]
	for i := range events {
		env := &out[i]
		*env = events[i]
		parent := ctx
		if !callerSpan {
			if sc := extract(&env.Metadata); sc.IsValid() {
				parent = trace.ContextWithRemoteSpanContext(ctx, sc)
			}
		}
		tl := l.forType(env.Type)
		_, span := t.tracer.Start(parent, tl.publishName, producerStart...)
		sc := span.SpanContext()
		if span.IsRecording() {
			span.SetAttributes(tl.spanAttrs...)
			setEventAttributes(span, env)
			inject(sc, &env.Metadata)
		} else if !carries(&env.Metadata, sc) {
			// A span that does not record is exported nowhere: the event
			// keeps the context it has when that is of the same trace and
			// sampling decision, which saves formatting a new one.
			inject(sc, &env.Metadata)
		}
		spans = append(spans, span)
	}
	err := fn(ctx, out...)
	for _, span := range spans {
		if err != nil && span.IsRecording() {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
	b.recordPublish(ctx, start, err)
	return err
}

// recordPublish records the duration of a publish call that started at
// start and returned err.
func (b *Bus) recordPublish(ctx context.Context, start time.Time, err error) {
	dur := b.bt.publishOK
	if err != nil {
		dur = b.bt.publishFailed
	}
	b.bt.t.publishDuration.Record(ctx, time.Since(start).Seconds(), dur.record...)
}

// setEventAttributes sets the per-event attributes of a span that records.
func setEventAttributes(span trace.Span, env *eventsource.Envelope) {
	span.SetAttributes(
		semconv.MessagingMessageID(env.ID.String()),
		AggregateTypeKey.String(env.AggregateType),
		AggregateIDKey.String(env.AggregateID))
}
