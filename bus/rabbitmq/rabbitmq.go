package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/internal/redact"
	"github.com/eventsource-go/eventsource/internal/sleep"
)

// Message headers (see the package documentation).
const (
	hEventID     = "es-event-id"
	hEventType   = "es-event-type"
	hAggType     = "es-aggregate-type"
	hAggID       = "es-aggregate-id"
	hVersion     = "es-aggregate-version"
	hTraceParent = "traceparent"
	hTraceState  = "tracestate"
	hAttempts    = "es-attempts" // attempts made before this delivery (retries only)
	hHandlers    = "es-handlers" // JSON array of the subscriptions to run (retries, replays)
	hLastError   = "es-last-error"

	hDeadLetterID = "es-dead-letter-id"
	hReason       = "es-reason"
	hError        = "es-error"
	hGroup        = "es-group"
	hTime         = "es-dead-lettered-at"
	hSource       = "es-source"
	hSourceID     = "es-source-id"
	hDroppedSize  = "es-dropped-size" // the record was stored without its bytes, this many
)

// Bus is the RabbitMQ bus. It implements bus.Bus and
// bus.MultiTypeSubscriber.
type Bus struct {
	*consumer.Front // Subscribe, SubscribeTypes, SubscribeAll, Start, Stats
	closer          bus.CloseOnce
	gate            consumer.Gate
	cfg             Config
	log             *slog.Logger
	names           Names
	codec           eventsource.JSONCodec
	dialCfg         amqp.Config

	d        *consumer.Dispatcher
	counters consumer.Counters

	smu  sync.Mutex
	sess *session      // the live session; nil while reconnecting
	up   chan struct{} // closed when a session is installed; replaced when it is lost
	gen  atomic.Uint64

	topoMu  sync.Mutex     // serializes topology changes; guards what follows
	keys    map[string]int // binding keys wanted, with how many subscriptions want each
	consume bool           // Start was called

	closing chan struct{} // closed when Close starts: wakes waits for a connection

	runCtx   context.Context // the supervisor's; cancelled at the end of Close
	stopRun  context.CancelFunc
	readCtx  context.Context // the read loops'; cancelled first at Close
	stopRead context.CancelFunc
	super    sync.WaitGroup // the supervisor
	final    *session       // the supervisor's last session, for Close
	readers  sync.WaitGroup // read loops
	wg       sync.WaitGroup // everything else: watchers, confirm trackers

}

var (
	_ bus.Bus                 = (*Bus)(nil)
	_ bus.MultiTypeSubscriber = (*Bus)(nil)
	_ consumer.Rescheduler    = settler{}
)

// session is one connection and its channels. Its fields marked topoMu
// are guarded by Bus.topoMu.
type session struct {
	b     *Bus
	gen   uint64
	conn  *amqp.Connection
	pub   *publisher   // the first of lanes: retries, dead letters, replays
	lanes []*publisher // Publish's channels; an aggregate's events take one
	topo  *amqp.Channel
	acks  *acker // set when consuming starts (topoMu)
	lost  chan struct{}
	once  sync.Once
	cause error

	declared  bool            // topoMu: the group's queues are declared
	bound     map[string]bool // topoMu: bindings made on this connection
	consuming bool            // topoMu
}

// New validates cfg, connects, declares the exchange and returns a bus.
// Queues are declared, bound and consumed from Start.
func New(ctx context.Context, cfg Config) (*Bus, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Registry.SetNameValidator(ValidateTypeName); err != nil {
		return nil, fmt.Errorf("rabbitmq bus: the registry holds a type name AMQP cannot route: %w", err)
	}
	b := &Bus{
		cfg:     cfg,
		log:     cfg.Logger.With(slog.String("bus", "rabbitmq"), slog.String("group", cfg.Group)),
		names:   cfg.Names(),
		codec:   eventsource.NewJSONCodec(cfg.Registry),
		keys:    map[string]int{},
		up:      make(chan struct{}),
		closing: make(chan struct{}),
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(cfg.ConnectionName)
	b.dialCfg = amqp.Config{Heartbeat: cfg.Heartbeat, TLSClientConfig: cfg.TLS, Properties: props, Locale: "en_US"}
	d, err := consumer.New(consumer.Config{
		Group: cfg.Group, Registry: cfg.Registry, Settler: settler{b}, Retry: cfg.Retry, BrokerRetries: true,
		Workers: cfg.Workers, MaxInFlight: cfg.MaxInFlight, Logger: b.log, Counters: &b.counters, Middleware: cfg.Middleware,
	})
	if err != nil {
		return nil, err
	}
	b.d = d
	b.Front = consumer.NewFront(d, transport{b}, &b.gate)
	b.runCtx, b.stopRun = context.WithCancel(context.Background())
	b.readCtx, b.stopRead = context.WithCancel(context.Background())
	s, err := b.connect(ctx)
	if err != nil {
		b.stopRun()
		b.stopRead()
		_ = d.Close(ctx)
		return nil, err
	}
	if !b.install(s) {
		b.stopRun()
		b.stopRead()
		_ = d.Close(ctx)
		_ = s.conn.Close()
		return nil, fmt.Errorf("rabbitmq bus: connection to %s lost at once: %w", cfg.RedactedURL(), s.cause)
	}
	b.super.Go(func() { b.supervise(s) })
	return b, nil
}

// Config returns the bus's configuration, defaults applied.
func (b *Bus) Config() Config { return b.cfg }

// Names returns the broker objects this bus uses.
func (b *Bus) Names() Names { return b.names }

// dial opens a connection; the dial honours ctx and DialTimeout.
func (b *Bus) dial(ctx context.Context) (*amqp.Connection, error) {
	conn, err := dialContext(ctx, b.cfg.URL, b.dialCfg, b.cfg.DialTimeout)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq bus: connect to %s: %w", b.cfg.RedactedURL(), scrub(err, b.cfg.URL))
	}
	return conn, nil
}

// scrub keeps the URL (and so the password) out of an error's text.
func scrub(err error, raw string) error {
	if raw != "" && strings.Contains(err.Error(), raw) {
		return errors.New(strings.ReplaceAll(err.Error(), raw, redact.URL(raw)))
	}
	return err
}

// connect dials and sets up a session: the publishing channel in confirm
// mode, the topology channel, the exchange, and, once Start was called,
// the group's queues, bindings and consumer.
//
// The session is a local, not the named result: a failed return sets the
// result to nil, and the cleanup below and the goroutines started here
// still need the session.
func (b *Bus) connect(ctx context.Context) (_ *session, err error) {
	conn, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	release := guardConn(ctx, conn) // amqp091's calls below take no ctx
	s := &session{b: b, gen: b.gen.Add(1), conn: conn, lost: make(chan struct{}), bound: map[string]bool{}}
	defer func() {
		err = release(err)
		if err != nil {
			s.fail(err)
			_ = conn.Close()
		}
	}()
	b.watch(s, conn.NotifyClose(make(chan *amqp.Error, 1)))
	window := max(b.cfg.ConfirmWindow/b.cfg.PublishChannels, 1)
	for range b.cfg.PublishChannels {
		pubCh, err := conn.Channel()
		if err != nil {
			return nil, fmt.Errorf("rabbitmq bus: open channel: %w", err)
		}
		b.watch(s, pubCh.NotifyClose(make(chan *amqp.Error, 1)))
		p, err := newPublisher(conn, pubCh, window, !b.cfg.AllowUnroutable)
		if err != nil {
			return nil, fmt.Errorf("rabbitmq bus: confirm mode: %w", err)
		}
		b.wg.Go(func() { <-p.done })
		s.lanes = append(s.lanes, p)
	}
	s.pub = s.lanes[0]
	if s.topo, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("rabbitmq bus: open channel: %w", err)
	}
	b.watch(s, s.topo.NotifyClose(make(chan *amqp.Error, 1)))
	if err := s.topo.ExchangeDeclare(b.names.Exchange, b.cfg.ExchangeType, !b.cfg.Transient, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("rabbitmq bus: declare exchange %q: %w", b.names.Exchange, err)
	}
	b.topoMu.Lock()
	defer b.topoMu.Unlock()
	if err := b.applyLocked(s); err != nil {
		return nil, err
	}
	return s, nil
}

// watch fails s when a connection or channel of it closes.
func (b *Bus) watch(s *session, c chan *amqp.Error) {
	b.wg.Go(func() {
		e, ok := <-c
		if ok && e != nil {
			s.fail(e)
		} else {
			s.fail(amqp.ErrClosed)
		}
	})
}

// fail marks s lost, once, and takes it out of service.
func (s *session) fail(cause error) {
	s.once.Do(func() {
		s.cause = cause
		close(s.lost)
		b := s.b
		b.smu.Lock()
		if b.sess == s {
			b.sess = nil
			b.up = make(chan struct{})
		}
		b.smu.Unlock()
	})
}

func (s *session) isLost() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

// install makes s the live session, unless it was lost already.
func (b *Bus) install(s *session) bool {
	b.smu.Lock()
	defer b.smu.Unlock()
	if s.isLost() {
		return false
	}
	b.sess = s
	close(b.up)
	return true
}

// current returns the live session, or nil.
func (b *Bus) current() *session {
	b.smu.Lock()
	defer b.smu.Unlock()
	return b.sess
}

// waitSession returns the live session, waiting for a reconnect if there
// is none, until ctx ends or Close starts.
func (b *Bus) waitSession(ctx context.Context) (*session, error) {
	for {
		b.smu.Lock()
		s, up := b.sess, b.up
		b.smu.Unlock()
		if s != nil {
			return s, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, fmt.Errorf("rabbitmq bus: waiting for a connection to %s: %w", b.cfg.RedactedURL(), ctx.Err())
		case <-b.closing:
			return nil, bus.ErrClosed
		}
	}
}

// supervise redials with backoff whenever the session is lost, until
// Close: the new session redeclares the topology and resumes consuming.
func (b *Bus) supervise(s *session) {
	defer func() { b.final = s }()
	for {
		select {
		case <-s.lost:
		case <-b.runCtx.Done():
			return
		}
		b.log.LogAttrs(b.runCtx, slog.LevelWarn, "connection to RabbitMQ lost; reconnecting",
			slog.String("url", b.cfg.RedactedURL()), slog.Any("error", s.cause))
		_ = s.conn.CloseDeadline(time.Now().Add(time.Second)) // frees every channel of it
		wait := b.cfg.ReconnectMin
		for {
			if !sleep.For(b.runCtx, wait) {
				return
			}
			next, err := b.connect(b.runCtx)
			if err == nil && b.runCtx.Err() != nil {
				s = next // Close takes it down
				return
			}
			if err == nil && b.install(next) {
				s = next
				b.counters.Reconnects.Add(1)
				b.log.LogAttrs(b.runCtx, slog.LevelInfo, "reconnected to RabbitMQ", slog.String("url", b.cfg.RedactedURL()))
				break
			}
			if err == nil {
				_ = next.conn.Close()
				err = next.cause
			}
			if b.runCtx.Err() != nil {
				return
			}
			b.log.LogAttrs(b.runCtx, slog.LevelWarn, "reconnecting to RabbitMQ failed; will try again",
				slog.String("url", b.cfg.RedactedURL()), slog.Duration("wait", wait), slog.Any("error", err))
			wait = min(wait*2, b.cfg.ReconnectMax)
		}
	}
}

// queueArgs are the arguments of the group's queues.
func (b *Bus) queueArgs() amqp.Table {
	if b.cfg.QuorumQueues {
		return amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}
	}
	return nil
}

// applyLocked makes the broker match what the subscriptions want: the
// group's queues, one binding per key, and the consumer. Called with
// topoMu held.
func (b *Bus) applyLocked(s *session) error {
	if !b.consume {
		return nil
	}
	ch := s.topo
	durable := !b.cfg.Transient
	if !s.declared {
		for _, q := range []string{b.names.Queue, b.names.DeadLetterQueue} {
			if _, err := ch.QueueDeclare(q, durable, false, false, false, b.queueArgs()); err != nil {
				return fmt.Errorf("rabbitmq bus: declare queue %q: %w", q, err)
			}
		}
		for _, q := range b.names.RetryQueues {
			// Expired messages go back through the default exchange to the
			// group's queue, and to no other group's.
			args := amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": b.names.Queue}
			if b.cfg.QuorumQueues {
				args[amqp.QueueTypeArg] = amqp.QueueTypeQuorum
			}
			if _, err := ch.QueueDeclare(q, durable, false, false, false, args); err != nil {
				return fmt.Errorf("rabbitmq bus: declare queue %q: %w", q, err)
			}
		}
		s.declared = true
	}
	for key, n := range b.keys {
		if n > 0 && !s.bound[key] {
			if err := ch.QueueBind(b.names.Queue, key, b.names.Exchange, false, nil); err != nil {
				return fmt.Errorf("rabbitmq bus: bind %q to %q: %w", b.names.Queue, key, err)
			}
			s.bound[key] = true
		}
	}
	for key := range s.bound {
		if b.keys[key] == 0 {
			if err := ch.QueueUnbind(b.names.Queue, key, b.names.Exchange, nil); err != nil {
				return fmt.Errorf("rabbitmq bus: unbind %q from %q: %w", b.names.Queue, key, err)
			}
			delete(s.bound, key)
		}
	}
	if !s.consuming && b.readCtx.Err() == nil {
		if err := b.startConsuming(s); err != nil {
			return err
		}
		s.consuming = true
	}
	return nil
}

func (b *Bus) startConsuming(s *session) error {
	ch, err := s.conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq bus: open channel: %w", err)
	}
	b.watch(s, ch.NotifyClose(make(chan *amqp.Error, 1)))
	if err := ch.Qos(b.cfg.Prefetch, 0, false); err != nil {
		return fmt.Errorf("rabbitmq bus: qos: %w", err)
	}
	deliveries, err := ch.Consume(b.names.Queue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("rabbitmq bus: consume %q: %w", b.names.Queue, err)
	}
	s.acks = newAcker(ch, b.cfg.Prefetch/2)
	b.readers.Go(func() { b.readLoop(s, deliveries) })
	return nil
}

// syncTopology applies the wanted topology on the live session, waiting
// for a reconnect if needed, within OpTimeout.
func (b *Bus) syncTopology(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.OpTimeout)
	defer cancel()
	for {
		s, err := b.waitSession(ctx)
		if err != nil {
			return fmt.Errorf("rabbitmq bus: subscription: %w", err)
		}
		b.topoMu.Lock()
		err = b.applyLocked(s)
		b.topoMu.Unlock()
		if err == nil {
			return nil
		}
		if isRefused(err) {
			return err
		}
		// The connection went under us; the next session applies it all.
		select {
		case <-s.lost:
		case <-ctx.Done():
			return fmt.Errorf("rabbitmq bus: subscription: %w (last error: %w)", ctx.Err(), err)
		}
	}
}

// isRefused reports a broker refusal that a reconnect would not cure.
func isRefused(err error) bool {
	var aerr *amqp.Error
	if !errors.As(err, &aerr) {
		return false
	}
	switch aerr.Code {
	case amqp.AccessRefused, amqp.NotFound, amqp.ResourceLocked, amqp.PreconditionFailed, amqp.NotAllowed:
		return true
	}
	return false
}

// Publish sends events to the exchange with routing key
// "{aggregate_type}.{event_type}", pipelined over Config.PublishChannels
// channels (all of one aggregate's events on the same one, in order), and
// returns once the broker confirmed every one. Messages whose
// confirmation a lost connection took with it are sent again on the next
// connection (a consumer may then see an event twice); those the broker returned as unroutable or nacked, or
// that ctx or Close cut short, are reported in a *PublishError. An invalid
// envelope fails the whole call before anything is sent.
func (b *Bus) Publish(ctx context.Context, events ...eventsource.Envelope) error {
	if ok, err := b.gate.EnterPublish(events); !ok {
		return err
	}
	defer b.gate.Leave()
	msgs := make([]outgoing, len(events))
	for i := range events {
		if err := b.prepare(&events[i], &msgs[i]); err != nil {
			return fmt.Errorf("envelope %d: %w", i, err)
		}
	}
	idx := make([]int, len(msgs))
	for i := range idx {
		idx[i] = i
	}
	var failed []EventFailure
	confirmed := 0
	batch := msgs
	for len(idx) > 0 {
		s, err := b.waitSession(ctx)
		if err != nil {
			for _, i := range idx {
				failed = append(failed, EventFailure{Index: i, EventID: events[i].ID.String(), Err: fmt.Errorf("%w: %w", ErrUnconfirmed, err)})
			}
			break
		}
		errs := publishLanes(ctx, s.lanes, batch)
		var again []int
		for j, err := range errs {
			switch {
			case err == nil:
				confirmed++
			case errors.Is(err, errConnLost):
				again = append(again, idx[j])
			default:
				failed = append(failed, EventFailure{Index: idx[j], EventID: events[idx[j]].ID.String(), Err: err})
			}
		}
		if len(again) > 0 {
			batch = make([]outgoing, len(again))
			for j, i := range again {
				batch[j] = msgs[i]
			}
		}
		idx = again
	}
	b.counters.Published.Add(uint64(confirmed))
	if len(failed) == 0 {
		return nil
	}
	slices.SortFunc(failed, func(x, y EventFailure) int { return x.Index - y.Index })
	return &PublishError{Confirmed: confirmed, Failed: failed}
}

// prepare checks and encodes one envelope.
func (b *Bus) prepare(env *eventsource.Envelope, out *outgoing) error {
	if err := ValidateTypeName(env.Type); err != nil {
		return err
	}
	if strings.Contains(env.AggregateType, ".") {
		return fmt.Errorf("%w: rabbitmq bus: aggregate type %q contains '.', which would break the routing key", eventsource.ErrInvalidEvent, env.AggregateType)
	}
	data, err := b.codec.Marshal(*env)
	if err != nil {
		return err
	}
	if len(data) > b.cfg.MaxMessageSize {
		return fmt.Errorf("%w: rabbitmq bus: event %s is %d bytes encoded, over MaxMessageSize (%d)", bus.ErrTooLarge, env.ID, len(data), b.cfg.MaxMessageSize)
	}
	id := env.ID.String()
	h := amqp.Table{
		hEventID: id, hEventType: env.Type, hAggType: env.AggregateType,
		hAggID: env.AggregateID, hVersion: env.Version,
	}
	if env.Metadata.TraceParent != "" {
		h[hTraceParent] = env.Metadata.TraceParent
	}
	if env.Metadata.TraceState != "" {
		h[hTraceState] = env.Metadata.TraceState
	}
	*out = outgoing{
		lane:     laneOf(env.AggregateID, b.cfg.PublishChannels),
		exchange: b.names.Exchange,
		key:      env.AggregateType + "." + env.Type,
		msg: amqp.Publishing{
			Headers: h, ContentType: "application/json", DeliveryMode: amqp.Persistent,
			MessageId: id, Timestamp: env.OccurredAt, Type: env.Type, Body: data,
		},
	}
	return nil
}

// transport is the RabbitMQ side of the Front: it binds "*.{type}" (or
// "#" for a wildcard) to the group's queue for each subscription, and
// starts consuming.
type transport struct{ b *Bus }

// bindingKeys returns the keys a subscription to types needs, checking
// that AMQP can route them.
func bindingKeys(types []string) ([]string, error) {
	if types == nil {
		return []string{"#"}, nil
	}
	keys := make([]string, 0, len(types))
	for _, t := range types {
		if err := ValidateTypeName(t); err != nil {
			return nil, fmt.Errorf("%w: %w", bus.ErrInvalidSubscription, err)
		}
		keys = append(keys, "*."+t)
	}
	return keys, nil
}

// Bind wants the subscription's keys bound; once started, at once.
func (t transport) Bind(types []string) error {
	b := t.b
	keys, err := bindingKeys(types)
	if err != nil {
		return err
	}
	b.topoMu.Lock()
	for _, k := range keys {
		b.keys[k]++
	}
	started := b.consume
	b.topoMu.Unlock()
	if !started {
		return nil
	}
	if err := b.syncTopology(context.Background()); err != nil {
		return errors.Join(err, t.Unbind(types))
	}
	return nil
}

// Unbind drops the subscription's keys; a key no other subscription
// wants is unbound, unless Close has started: the bindings stay for the
// group's other members.
func (t transport) Unbind(types []string) error {
	b := t.b
	keys, _ := bindingKeys(types) // Bind checked them
	b.topoMu.Lock()
	for _, k := range keys {
		if b.keys[k]--; b.keys[k] <= 0 {
			delete(b.keys, k)
		}
	}
	started := b.consume
	b.topoMu.Unlock()
	select {
	case <-b.closing:
		return nil
	default:
	}
	if !started {
		return nil
	}
	return b.syncTopology(context.Background())
}

// StartConsuming declares the group's queues, binds them and consumes.
func (t transport) StartConsuming(ctx context.Context) error {
	b := t.b
	b.topoMu.Lock()
	b.consume = true
	b.topoMu.Unlock()
	if err := b.syncTopology(ctx); err != nil {
		b.topoMu.Lock()
		b.consume = false
		b.topoMu.Unlock()
		return err
	}
	return nil
}

// DeadLetters returns the admin API of this bus's group's dead letters.
func (b *Bus) DeadLetters() consumer.Admin { return admin{b} }

// Close stops consuming, lets the handlers finish what was delivered, acks
// it, and closes the connection; deliveries not yet handed to handlers go
// back to the queue for the group's other members. Publish calls waiting
// for a connection return. If ctx ends first it returns ctx.Err(); see
// consumer.Dispatcher.Close.
func (b *Bus) Close(ctx context.Context) error {
	return b.closer.Do(ctx, func() error { return b.close(ctx) })
}

func (b *Bus) close(ctx context.Context) error {
	close(b.closing)
	shutErr := b.gate.Shut(ctx)

	b.stopRead()
	b.readers.Wait()
	err := b.d.Close(ctx)
	if err == nil && shutErr != nil {
		err = fmt.Errorf("rabbitmq bus: close: %w", shutErr)
	}
	if s := b.current(); s != nil {
		b.topoMu.Lock()
		if s.acks != nil {
			s.acks.flush()
		}
		b.topoMu.Unlock()
	}
	b.stopRun()
	b.super.Wait()
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if s := b.final; s != nil {
		if cerr := s.conn.CloseDeadline(deadline); cerr != nil && !errors.Is(cerr, amqp.ErrClosed) && err == nil {
			err = fmt.Errorf("rabbitmq bus: close connection: %w", cerr)
		}
		s.fail(amqp.ErrClosed)
	}
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("rabbitmq bus: close: %w", ctx.Err())
		}
	}
	return err
}
