package otel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	otelapi "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
)

// statsInstruments report a bus's Stats: the bus counts, these read.
type statsInstruments struct {
	published, received, delivered, invoked, errors, panics, handled,
	retries, deadLettered, reclaimed, dropped, reconnects metric.Int64ObservableCounter
	inFlight, background metric.Int64ObservableGauge

	followerLag      metric.Int64ObservableGauge
	followerLagTime  metric.Float64ObservableGauge
	followerFailures metric.Int64ObservableGauge
	brokerLag        metric.Int64ObservableGauge
}

func (s *statsInstruments) init(m metric.Meter) error {
	var errs []error
	counter := func(name, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter("eventsource.bus."+name, metric.WithUnit("{event}"), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	// The bus counts what it accepts, so the semantic conventions' sent
	// messages cost nothing per event.
	published, err := m.Int64ObservableCounter("messaging.client.sent.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Events the bus accepted from Publish and PublishAsync."))
	errs = append(errs, err)
	s.published = published
	s.received = counter("received", "Events read from the broker by this instance.")
	s.delivered = counter("delivered", "Events handed to a subscription.")
	s.invoked = counter("handler.invocations", "Handler calls, retries included.")
	s.errors = counter("handler.errors", "Handler calls that failed or panicked.")
	s.panics = counter("handler.panics", "Handler calls that panicked.")
	s.handled = counter("handled", "Events fully handled and acknowledged.")
	s.retries = counter("retries", "Deliveries scheduled again after a failure.")
	s.deadLettered = counter("dead_lettered", "Events moved to the dead-letter destination.")
	s.reclaimed = counter("reclaimed", "Events taken over from a consumer that stopped.")
	s.dropped = counter("dropped", "Events discarded by an overflow policy or a forced close.")
	s.reconnects = counter("reconnects", "Broker connections re-established.")
	s.inFlight = gauge("eventsource.bus.in_flight", "{event}", "Events being handled now.")
	s.background = gauge("eventsource.bus.background_tasks", "{event}", "Events queued or running via PublishAsync.")
	s.followerLag = gauge("eventsource.follower.lag", "{event}", "Events stored and not yet applied or published by a projection or relay.")
	s.followerLagTime, err = m.Float64ObservableGauge("eventsource.follower.lag_time", metric.WithUnit("s"),
		metric.WithDescription("How long ago the oldest event a projection or relay has not applied was stored."))
	errs = append(errs, err)
	s.followerFailures = gauge("eventsource.follower.failures", "{failure}", "Consecutive failed passes of a projection or relay.")
	s.brokerLag = gauge("eventsource.broker.lag", "{message}", "What the broker reports as a consumer group's lag, by kind (bus.LagKind: backlog, pending, consumer, queue_depth).")
	return errors.Join(errs...)
}

func (s *statsInstruments) all() []metric.Observable {
	return []metric.Observable{s.published, s.received, s.delivered, s.invoked, s.errors, s.panics, s.handled,
		s.retries, s.deadLettered, s.reclaimed, s.dropped, s.reconnects, s.inFlight, s.background}
}

// observeStats reports b's Stats under attrs at every collection, and
// Stats.Published, as messaging.client.sent.messages, under sent: the
// semantic conventions require that metric's operation name.
func (t *Telemetry) observeStats(b bus.Bus, attrs, sent attribute.Set) (metric.Registration, error) {
	s := &t.stats
	opt := metric.WithAttributeSet(attrs)
	sentOpt := metric.WithAttributeSet(sent)
	return t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := b.Stats()
		o.ObserveInt64(s.published, int64(st.Published), sentOpt)
		for _, c := range []struct {
			inst metric.Int64ObservableCounter
			v    uint64
		}{
			{s.received, st.Received}, {s.delivered, st.Delivered},
			{s.invoked, st.HandlersInvoked}, {s.errors, st.HandlerErrors}, {s.panics, st.HandlerPanics},
			{s.handled, st.Handled}, {s.retries, st.Retries}, {s.deadLettered, st.DeadLettered},
			{s.reclaimed, st.Reclaimed}, {s.dropped, st.Dropped}, {s.reconnects, st.Reconnects},
		} {
			o.ObserveInt64(c.inst, int64(c.v), opt)
		}
		o.ObserveInt64(s.inFlight, st.InFlight, opt)
		o.ObserveInt64(s.background, st.BackgroundTasks, opt)
		return nil
	}, s.all()...)
}

// Follower kinds (FollowerKindKey).
const (
	FollowerProjection = "projection"
	FollowerRelay      = "relay"
)

// ObserveFollower reports the lag, the lag in time and the consecutive
// failures of a projection runner or relay (kind FollowerProjection or
// FollowerRelay) named name, read from status at every collection:
//
//	tel.ObserveFollower(otel.FollowerRelay, "outbox", relay.Status)
//	tel.ObserveFollower(otel.FollowerProjection, "orders", func() eventstore.FollowerStatus {
//		return runner.Status().FollowerStatus
//	})
//
// Unregister the returned registration when the follower is gone.
func (t *Telemetry) ObserveFollower(kind, name string, status func() eventstore.FollowerStatus) (metric.Registration, error) {
	s := &t.stats
	opt := metric.WithAttributeSet(attribute.NewSet(FollowerKindKey.String(kind), FollowerNameKey.String(name)))
	reg, err := t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := status()
		o.ObserveInt64(s.followerLag, st.Lag(), opt)
		o.ObserveFloat64(s.followerLagTime, st.LagTime.Seconds(), opt)
		o.ObserveInt64(s.followerFailures, int64(st.ConsecutiveFailures), opt)
		return nil
	}, s.followerLag, s.followerLagTime, s.followerFailures)
	if err != nil {
		return nil, fmt.Errorf("otel: observe follower %s: %w", name, err)
	}
	return reg, nil
}

// observeLag reports what r tells of its group's lag under base, one
// point per kind, at every collection: a broker round trip on the
// collecting goroutine, with its ctx, bounded by t.lagTimeout (WithLagTimeout) and ended when
// stop is (the bus's Close, which waits for collections in progress). An
// error skips the observation and goes to OpenTelemetry's error handler
// (otel.Handle), not to the reader: a callback's error fails the whole
// collection of a periodic reader, so a broker that cannot be asked would
// cost every other measurement of the provider for as long as it cannot.
func (t *Telemetry) observeLag(r bus.LagReporter, base []attribute.KeyValue, stop context.Context) (metric.Registration, error) {
	s := &t.stats
	var mu sync.Mutex // the SDK may collect from several readers at once
	opts := map[bus.LagKind]metric.ObserveOption{}
	return t.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, t.lagTimeout)
		defer cancel()
		defer context.AfterFunc(stop, cancel)()
		lags, err := r.Lag(ctx)
		if err != nil {
			otelapi.Handle(fmt.Errorf("otel: reading the broker's lag: %w", err))
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lags {
			opt, ok := opts[l.Kind]
			if !ok {
				// The kinds are a handful of constants: the map stays small.
				opt = metric.WithAttributeSet(attribute.NewSet(append(slices.Clone(base), LagKindKey.String(string(l.Kind)))...))
				opts[l.Kind] = opt
			}
			o.ObserveInt64(s.brokerLag, l.Messages, opt)
		}
		return nil
	}, s.brokerLag)
}
