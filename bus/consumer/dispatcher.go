package consumer

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/internal/sleep"
)

// Message is one message read from a broker, as the transport hands it to
// the Dispatcher. Only Body is required.
type Message struct {
	Source string // the stream, queue or topic it was read from
	ID     string // the broker's ID for it, used to acknowledge it
	Ref    any    // anything else the transport needs to settle it

	// Key is the aggregate ID when the transport knows it without decoding
	// (a stream field, a header, a message key); empty, the Dispatcher
	// decodes Body first to choose the worker.
	Key string
	// Type is the event type when known without decoding; with it, a
	// message no local handler wants is acknowledged without decoding.
	Type string
	Body []byte
	// Attempt is the broker's delivery count: 1 on first delivery. A
	// redelivered message counts each earlier delivery as one attempt.
	Attempt int
	// Handlers, for a replayed dead letter, names the subscriptions that
	// failed; if any of them is registered, only those run.
	Handlers []string
}

// Settler is what a transport does with the outcome of a message. The
// Dispatcher calls Ack from one goroutine, DeadLetter and Release from its
// workers, so they must be safe for concurrent use.
type Settler interface {
	// Ack acknowledges messages whose handlers all succeeded (or that no
	// handler wants). An error is logged and the batch is retried.
	Ack(ctx context.Context, msgs []Message) error
	// DeadLetter stores rec in the group's dead-letter destination and
	// acknowledges msg, atomically if the broker allows. An error is
	// logged and the call retried.
	DeadLetter(ctx context.Context, msg Message, rec DeadLetter) error
	// Release hands back messages left unsettled at Close, for the broker
	// to redeliver.
	Release(ctx context.Context, msgs []Message)
}

// Rescheduler is implemented by transports that keep retries on the broker
// (a delay queue, a retry topic) rather than in the consumer's memory; see
// Config.BrokerRetries.
type Rescheduler interface {
	// Reschedule hands msg back to the broker, to be delivered to this
	// group again after r.Delay with r's attempt count and handler names
	// (the transport carries them in headers and sets Message.Attempt and
	// Message.Handlers on redelivery), and acknowledges the original,
	// atomically if the broker allows. An error is logged and the call
	// retried.
	Reschedule(ctx context.Context, msg Message, r Retry) error
}

// Retry describes one rescheduled delivery.
type Retry struct {
	Attempts int           // attempts made so far
	Delay    time.Duration // how long the broker should hold the message
	Handlers []string      // the subscriptions that failed and run again
	Error    string        // the last error's text
}

// Config configures a Dispatcher.
type Config struct {
	Group    string                // the consumer group, recorded in dead letters
	Registry *eventsource.Registry // decodes envelopes; required
	Settler  Settler               // required
	Retry    RetryPolicy           // zero fields take DefaultRetryPolicy's
	// Workers is the number of goroutines running handlers (default
	// GOMAXPROCS, at least 4). Events of one aggregate always go to the
	// same worker.
	Workers int
	// MaxInFlight bounds the messages dispatched and not yet settled,
	// held-back ones and handled ones whose acknowledgement the broker has
	// not yet taken included; Dispatch blocks at the bound (default 4096).
	MaxInFlight int
	// AckBatch bounds how many messages one Ack call settles (default 1024).
	AckBatch int
	// Logger receives the dispatcher's lines (handler failures, dead
	// letters, settling retries), which carry the handler, event type,
	// event ID and attempt. It should carry the bus's own keys, bus and
	// group, as every transport's does (Logger.With): the dispatcher does
	// not add them again. Default slog.Default().
	Logger *slog.Logger
	// Counters, if set, are the transport's counters; Stats adds them.
	Counters *Counters
	// Middleware wraps every handler, outside each subscription's own
	// (bus.WithMiddleware).
	Middleware []bus.Middleware
	// BrokerRetries hands failed events back to the broker through the
	// Settler, which must implement Rescheduler, instead of parking them in
	// memory. The consumer then holds nothing unacknowledged while an event
	// waits, but later events of the same aggregate are not held back: a
	// retried event arrives after them.
	BrokerRetries bool
}

// Dispatcher decodes, routes and runs handlers for a distributed bus; see
// the package documentation.
type Dispatcher struct {
	closer bus.CloseOnce
	cfg    Config
	codec  eventsource.JSONCodec
	log    *slog.Logger
	seed   maphash.Seed

	routes atomic.Pointer[routeTable]
	mu     sync.Mutex // guards subs, closed
	subs   []*subscription
	closed bool

	gate      sync.RWMutex // Dispatch holds it shared; Close exclusive, to close the queues
	stopped   bool
	stopping  chan struct{} // closed when Close starts: wakes a blocked Dispatch
	workers   []*worker
	workersWG sync.WaitGroup
	slots     chan struct{}  // one token per message in flight
	acks      chan []Message // batches of acknowledgements, from workers to the acker
	ackerDone chan struct{}

	ctx    context.Context // handlers' context; cancelled when Close gives up
	cancel context.CancelFunc

	received, handled, retries, deadLettered, released atomic.Uint64
	inFlight                                           atomic.Int64
}

// New returns a running Dispatcher.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Registry == nil || cfg.Settler == nil {
		return nil, errors.New("consumer: Config needs a Registry and a Settler")
	}
	if _, ok := cfg.Settler.(Rescheduler); cfg.BrokerRetries && !ok {
		return nil, fmt.Errorf("consumer: BrokerRetries needs a Settler that implements Rescheduler; %T does not", cfg.Settler)
	}
	cfg.Retry = cfg.Retry.WithDefaults()
	if err := cfg.Retry.Validate(); err != nil {
		return nil, fmt.Errorf("consumer: retry policy: %w", err)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = max(runtime.GOMAXPROCS(0), 4)
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4096
	}
	if cfg.AckBatch <= 0 {
		cfg.AckBatch = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Dispatcher{
		cfg:       cfg,
		codec:     eventsource.NewJSONCodec(cfg.Registry),
		log:       cfg.Logger,
		seed:      maphash.MakeSeed(),
		stopping:  make(chan struct{}),
		slots:     make(chan struct{}, cfg.MaxInFlight),
		acks:      make(chan []Message, cfg.MaxInFlight),
		ackerDone: make(chan struct{}),
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.routes.Store(&routeTable{byType: map[string][]*subscription{}, byName: map[string]*subscription{}})
	d.workers = make([]*worker, cfg.Workers)
	for i := range d.workers {
		// The queue can hold every message in flight, so Dispatch, having
		// taken a slot, never waits on one busy worker.
		w := &worker{d: d, in: make(chan []*item, cfg.MaxInFlight), held: map[string][]*item{}}
		w.timer = time.NewTimer(time.Hour)
		w.timer.Stop()
		d.workers[i] = w
		d.workersWG.Go(w.run)
	}
	go d.runAcker()
	return d, nil
}

// Dispatch hands msg to the worker of its aggregate. It blocks while
// MaxInFlight messages are unsettled, until ctx ends; after Close it
// returns bus.ErrClosed.
func (d *Dispatcher) Dispatch(ctx context.Context, msg Message) error {
	_, err := d.DispatchBatch(ctx, []Message{msg})
	return err
}

// DispatchBatch hands msgs, in order, to the workers of their aggregates:
// one channel send per worker rather than per message, which is what a
// transport reading messages in batches should use. It returns how many
// were dispatched; on error the rest were not (see Dispatch).
func (d *Dispatcher) DispatchBatch(ctx context.Context, msgs []Message) (int, error) {
	d.gate.RLock()
	defer d.gate.RUnlock()
	if d.stopped {
		return 0, bus.ErrClosed
	}
	per := make([][]*item, len(d.workers))
	send := func() {
		for i, items := range per {
			if len(items) > 0 {
				d.workers[i].in <- items
				per[i] = nil
			}
		}
	}
	rt := d.routes.Load()
	for n, msg := range msgs {
		select {
		case d.slots <- struct{}{}:
		default:
			// Hand over what this batch holds first: its slots free only
			// once workers have it.
			send()
			select {
			case d.slots <- struct{}{}:
			case <-ctx.Done():
				return n, ctx.Err()
			case <-d.stopping:
				return n, bus.ErrClosed
			}
		}
		d.received.Add(1)
		d.inFlight.Add(1)
		// A renamed type's old messages carry its former name in the
		// transport's copy too; route and compare by the current one.
		msg.Type = d.cfg.Registry.Canonical(msg.Type)
		it := &item{msg: msg, attempts: max(msg.Attempt, 1) - 1}
		// A type no local handler wants still goes to a worker: the type
		// copy the transport read is only a hint, and the worker checks it
		// against the envelope before acknowledging the message unhandled.
		it.unwanted = msg.Type != "" && len(msg.Handlers) == 0 && len(rt.match(msg.Type)) == 0
		key := msg.Key
		if key == "" {
			it.decoded = true
			it.env, it.decodeErr = d.codec.Unmarshal(msg.Body)
			key = it.env.AggregateID
		}
		it.key = key
		w := maphash.String(d.seed, key) % uint64(len(d.workers))
		per[w] = append(per[w], it)
	}
	send()
	return len(msgs), nil
}

// item is one message on its way through a worker.
type item struct {
	msg       Message
	key       string
	decoded   bool
	env       eventsource.Envelope
	decodeErr error
	unwanted  bool // the transport's type hint matches no local handler
	routed    bool
	pending   []*subscription // handlers still to succeed
	missing   []string        // handler names a retry or replay wants that are not subscribed
	attempts  int             // attempts made, earlier deliveries included
	lastErr   error
	due       time.Time
}

// worker runs the handlers of the aggregates hashed to it, one event at a
// time. Everything but the counters belongs to its goroutine.
type worker struct {
	d       *Dispatcher
	in      chan []*item
	acks    []Message          // acknowledgements not yet handed to the acker
	held    map[string][]*item // key present: the aggregate waits for a retry; value: events held behind it
	waiting retryQueue
	timer   *time.Timer
	armed   time.Time // the due time the timer is set for

	delivered, invoked, errors, panics atomic.Uint64
	_                                  [32]byte // keep workers' counters off each other's cache lines
}

func (w *worker) run() {
	for {
		var fire <-chan time.Time
		if len(w.waiting) > 0 {
			if next := w.waiting[0].due; !next.Equal(w.armed) {
				w.timer.Reset(time.Until(next))
				w.armed = next
			}
			fire = w.timer.C
		}
		select {
		case batch, ok := <-w.in:
			if !ok {
				w.flushAcks()
				w.releaseAll()
				return
			}
			if w.d.ctx.Err() != nil { // Close gave up: hand back, do not run
				w.d.release(batch)
				continue
			}
			for _, it := range batch {
				if q, blocked := w.held[it.key]; blocked {
					w.held[it.key] = append(q, it)
					continue
				}
				w.process(it)
			}
		case <-fire:
			w.armed = time.Time{}
			w.retryDue()
		}
		w.flushAcks()
	}
}

// ack queues it's acknowledgement; flushAcks hands the queue over once per
// batch, so the acker is woken once per batch, not per message.
func (w *worker) ack(it *item) { w.acks = append(w.acks, it.msg) }

func (w *worker) flushAcks() {
	if len(w.acks) == 0 {
		return
	}
	msgs := w.acks
	w.acks = make([]Message, 0, len(msgs))
	w.d.sendAcks(msgs)
}

// process runs it's pending handlers once and settles or parks it. It
// reports whether it was parked for a retry.
func (w *worker) process(it *item) (parked bool) {
	d := w.d
	// Close gave up: hand it back without running it. An event released
	// because it could not be settled is then not overtaken by its
	// aggregate's later events of the same batch or held queue.
	if d.ctx.Err() != nil {
		d.release([]*item{it})
		return false
	}
	if it.unwanted && !it.decoded {
		// Read the envelope's type only, not the payload: a message that
		// is not for this group costs little.
		typ, err := eventsource.EnvelopeType(it.msg.Body)
		typ = d.cfg.Registry.Canonical(typ)
		switch {
		case err != nil:
			d.deadLetter(it, ReasonMalformed, err)
		case typ != it.msg.Type:
			d.deadLetter(it, ReasonTypeMismatch, typeMismatch(it.msg.Type, typ))
		default:
			w.ack(it)
		}
		return false
	}
	if !it.decoded {
		it.decoded = true
		it.env, it.decodeErr = d.codec.Unmarshal(it.msg.Body)
	}
	if it.decodeErr != nil {
		d.deadLetter(it, ReasonFor(it.decodeErr), it.decodeErr)
		return false
	}
	first := !it.routed
	if first {
		if it.msg.Type != "" && it.msg.Type != it.env.Type {
			d.deadLetter(it, ReasonTypeMismatch, typeMismatch(it.msg.Type, it.env.Type))
			return false
		}
		it.routed = true
		var missing []string
		it.pending, missing = d.match(&it.env, it.msg.Handlers)
		if len(missing) > 0 {
			// A retry or replay for handlers this process lacks (another
			// deploy, a renamed handler): running the others and
			// acknowledging would lose it for those.
			it.pending = nil
			it.missing = it.msg.Handlers
			d.deadLetter(it, ReasonUnknownHandler, fmt.Errorf("no handler named %s is subscribed in this process", strings.Join(missing, ", ")))
			return false
		}
		// After the match: the record names the handlers still owed the
		// event, and a replay runs only those.
		if it.attempts >= d.cfg.Retry.MaxRetries {
			d.deadLetter(it, ReasonMaxRetries, fmt.Errorf("delivered %d times without being acknowledged", it.msg.Attempt))
			return false
		}
	}
	it.attempts++
	var failed []*subscription
	var anyPermanent bool
	var permanentErr error
	hctx := bus.HandlerContext(d.ctx, &it.env)
	for _, s := range it.pending {
		if s.removed.Load() {
			continue
		}
		// The call first, then the delivery, as Stats reads them the other
		// way round (see there).
		w.invoked.Add(1)
		if first {
			w.delivered.Add(1)
		}
		if err := s.call(hctx, &it.env); err != nil {
			w.errors.Add(1)
			if errors.Is(err, bus.ErrHandlerPanic) {
				w.panics.Add(1)
			}
			failed = append(failed, s)
			it.lastErr = err
			if errors.Is(err, bus.ErrPermanent) {
				anyPermanent, permanentErr = true, err
			}
			d.log.LogAttrs(d.ctx, slog.LevelWarn, "event handler failed",
				slog.String("handler", s.name),
				slog.String("event_type", it.env.Type), slog.String("event_id", it.env.ID.String()),
				slog.String("aggregate_id", it.env.AggregateID), slog.Int("attempt", it.attempts),
				slog.Any("error", err))
		}
	}
	if len(failed) == 0 {
		w.ack(it)
		return false
	}
	it.pending = failed
	if anyPermanent {
		// A handler said retrying cannot help: spend no more attempts.
		d.deadLetter(it, ReasonPermanent, permanentErr)
		return false
	}
	if it.attempts >= d.cfg.Retry.MaxRetries {
		d.deadLetter(it, ReasonMaxRetries, it.lastErr)
		return false
	}
	d.retries.Add(1)
	if d.cfg.BrokerRetries {
		d.reschedule(it)
		return false
	}
	it.due = time.Now().Add(d.cfg.Retry.Backoff(it.attempts))
	heap.Push(&w.waiting, it)
	if _, blocked := w.held[it.key]; !blocked {
		w.held[it.key] = nil
	}
	return true
}

// retryDue retries the events whose backoff is over; each one that is
// settled lets the events held behind it run, in order.
func (w *worker) retryDue() {
	now := time.Now()
	for len(w.waiting) > 0 && !w.waiting[0].due.After(now) {
		it := heap.Pop(&w.waiting).(*item)
		if !w.process(it) {
			w.runHeld(it.key)
		}
	}
}

// runHeld runs the events held behind an aggregate's settled event, until
// one of them is parked in turn.
func (w *worker) runHeld(key string) {
	q := w.held[key]
	delete(w.held, key)
	for i, it := range q {
		if w.process(it) {
			w.held[key] = append(w.held[key], q[i+1:]...)
			return
		}
	}
}

// releaseAll hands back what waits for a retry or behind one, at Close.
func (w *worker) releaseAll() {
	var out []*item
	for _, it := range w.waiting {
		out = append(out, it)
	}
	w.waiting = nil
	for key, q := range w.held {
		out = append(out, q...)
		delete(w.held, key)
	}
	w.timer.Stop()
	if len(out) > 0 {
		w.d.release(out)
	}
}

// match returns the subscriptions for env or, for a retry or replay that
// names handlers, those of them subscribed here and the names that are not.
func (d *Dispatcher) match(env *eventsource.Envelope, names []string) (subs []*subscription, missing []string) {
	rt := d.routes.Load()
	if len(names) == 0 {
		return rt.match(env.Type), nil
	}
	for _, n := range names {
		if s, ok := rt.byName[n]; ok && s.wants(env.Type) {
			// A name listed twice (a hand-made or damaged record) runs
			// its handler once.
			if !slices.Contains(subs, s) {
				subs = append(subs, s)
			}
		} else {
			missing = append(missing, n)
		}
	}
	return subs, missing
}

func typeMismatch(hint, envelope string) error {
	return fmt.Errorf("the message's type field says %q, its envelope %q", hint, envelope)
}

// settled frees the slots of n messages.
func (d *Dispatcher) settled(n int) {
	d.inFlight.Add(int64(-n))
	for range n {
		<-d.slots
	}
}

// sendAcks hands msgs to the acker, which frees their slots once the
// broker has the acknowledgement: until then they are not settled, and an
// Ack outage must hold Dispatch at MaxInFlight rather than pile handled
// messages up in memory. The send never blocks for long: every batch in
// d.acks holds at least one slot, so it holds at most MaxInFlight batches.
func (d *Dispatcher) sendAcks(msgs []Message) {
	select {
	case d.acks <- msgs:
	case <-d.ctx.Done():
		d.releaseMessages(msgs)
	}
}

func (d *Dispatcher) release(items []*item) {
	msgs := make([]Message, len(items))
	for i, it := range items {
		msgs[i] = it.msg
	}
	d.releaseMessages(msgs)
}

func (d *Dispatcher) releaseMessages(msgs []Message) {
	d.cfg.Settler.Release(context.WithoutCancel(d.ctx), msgs)
	d.released.Add(uint64(len(msgs)))
	d.settled(len(msgs))
}

// deadLetter stores it in the dead-letter destination, retrying while the
// broker refuses, until Close gives up.
func (d *Dispatcher) deadLetter(it *item, reason Reason, cause error) {
	rec := DeadLetter{
		Reason:   reason,
		Attempts: it.attempts,
		Group:    d.cfg.Group,
		Time:     time.Now().UTC(),
		Source:   it.msg.Source,
		SourceID: it.msg.ID,
		Body:     it.msg.Body,

		EventType:   it.msg.Type,
		AggregateID: it.msg.Key,
	}
	if cause != nil {
		rec.Error = cause.Error()
	}
	if it.decodeErr == nil {
		rec.EventID = it.env.ID.String()
		rec.EventType = it.env.Type
		rec.AggregateType = it.env.AggregateType
		rec.AggregateID = it.env.AggregateID
		rec.Version = it.env.Version
	} else {
		var de *eventsource.DecodeError
		if errors.As(it.decodeErr, &de) && de.Type != "" {
			rec.EventType = de.Type
		}
	}
	switch reason {
	case ReasonMaxRetries, ReasonRetryRefused, ReasonPermanent:
		for _, s := range it.pending {
			rec.Handlers = append(rec.Handlers, s.name)
		}
	case ReasonUnknownHandler:
		rec.Handlers = it.missing
	}
	store := func() error { return d.cfg.Settler.DeadLetter(d.ctx, it.msg, rec) }
	ok, refused := d.settleOrRelease(it, "dead-lettering", store)
	if refused != nil {
		// Too large with its body, most likely: keep the record, its
		// origin and reason, and drop the bytes rather than retry forever.
		d.log.LogAttrs(d.ctx, slog.LevelWarn, "the broker refused the dead letter; storing it without the original bytes",
			slog.String("event_type", rec.EventType), slog.String("event_id", rec.EventID), slog.String("message_id", it.msg.ID),
			slog.Int("bytes", len(rec.Body)), slog.Any("error", refused))
		rec.Size, rec.Body, rec.BodyDropped = len(rec.Body), nil, true
		rec.Error = fmt.Sprintf("%s (the original bytes were dropped: %v)", rec.Error, refused)
		ok, refused = d.settleOrRelease(it, "dead-lettering", store)
		if refused != nil {
			d.log.LogAttrs(d.ctx, slog.LevelError, "the broker refused the dead letter without its bytes too; leaving the message for redelivery",
				slog.String("event_type", rec.EventType), slog.String("event_id", rec.EventID), slog.String("message_id", it.msg.ID),
				slog.Any("error", refused))
			d.release([]*item{it})
			return
		}
	}
	if !ok {
		return
	}
	d.deadLettered.Add(1)
	d.log.LogAttrs(d.ctx, slog.LevelError, "event dead-lettered",
		slog.String("reason", string(reason)), slog.String("handler", strings.Join(rec.Handlers, ",")),
		slog.String("event_type", rec.EventType), slog.String("event_id", rec.EventID),
		slog.String("aggregate_id", rec.AggregateID), slog.String("message_id", it.msg.ID),
		slog.Int("attempt", rec.Attempts), slog.String("error", rec.Error))
	d.settled(1)
}

// reschedule hands it back to the broker for a later attempt.
func (d *Dispatcher) reschedule(it *item) {
	r := Retry{Attempts: it.attempts, Delay: d.cfg.Retry.Backoff(it.attempts)}
	for _, s := range it.pending {
		r.Handlers = append(r.Handlers, s.name)
	}
	if it.lastErr != nil {
		r.Error = it.lastErr.Error()
	}
	rs := d.cfg.Settler.(Rescheduler)
	ok, refused := d.settleOrRelease(it, "rescheduling", func() error { return rs.Reschedule(d.ctx, it.msg, r) })
	if refused != nil {
		d.deadLetter(it, ReasonRetryRefused, fmt.Errorf("the broker refused the retry (%v) after: %w", refused, it.lastErr))
		return
	}
	if ok {
		d.settled(1)
	}
}

// settleOrRelease calls settle until the broker accepts it, backing off
// between tries. If Close gives up first, it releases it and reports false.
// A permanent refusal (ErrRefused) is returned at once, it left unsettled.
func (d *Dispatcher) settleOrRelease(it *item, what string, settle func() error) (ok bool, refused error) {
	wait := 50 * time.Millisecond
	for {
		err := settle()
		if err == nil {
			return true, nil
		}
		if errors.Is(err, ErrRefused) {
			return false, err
		}
		if d.ctx.Err() != nil {
			d.release([]*item{it})
			return false, nil
		}
		d.log.LogAttrs(d.ctx, slog.LevelWarn, what+" failed; will try again",
			slog.String("event_type", it.msg.Type), slog.String("message_id", it.msg.ID), slog.Any("error", err))
		if !sleep.For(d.ctx, wait) {
			d.release([]*item{it})
			return false, nil
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// runAcker batches acknowledgements: one broker call settles up to
// AckBatch messages, which is what keeps acking off the hot path.
func (d *Dispatcher) runAcker() {
	defer close(d.ackerDone)
	batch := make([]Message, 0, d.cfg.AckBatch)
	for msgs := range d.acks {
		batch = append(batch[:0], msgs...)
	fill:
		for len(batch) < d.cfg.AckBatch {
			select {
			case more, ok := <-d.acks:
				if !ok {
					break fill
				}
				batch = append(batch, more...)
			default:
				break fill
			}
		}
		for chunk := range slices.Chunk(batch, d.cfg.AckBatch) {
			d.flushAcks(chunk)
		}
	}
}

func (d *Dispatcher) flushAcks(batch []Message) {
	wait := 50 * time.Millisecond
	for {
		err := d.cfg.Settler.Ack(d.ctx, batch)
		if err == nil {
			d.handled.Add(uint64(len(batch)))
			d.settled(len(batch))
			return
		}
		if d.ctx.Err() == nil {
			d.log.LogAttrs(d.ctx, slog.LevelWarn, "acknowledging failed; will try again",
				slog.Int("messages", len(batch)), slog.Any("error", err))
		}
		if !sleep.For(d.ctx, wait) {
			// Close gave up: the broker redelivers what was not acknowledged.
			d.releaseMessages(batch)
			return
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// Close stops taking messages, lets the workers finish what was
// dispatched, acknowledges it, and stops every goroutine. Events waiting
// for a retry are released (see the package documentation). If ctx ends
// first, handlers' contexts are cancelled, what is left is released, and
// Close returns ctx.Err() without waiting for handlers that ignore their
// context. It is idempotent.
func (d *Dispatcher) Close(ctx context.Context) error {
	return d.closer.Do(ctx, func() error { return d.close(ctx) })
}

func (d *Dispatcher) close(ctx context.Context) error {
	close(d.stopping)
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.gate.Lock()
	d.stopped = true
	for _, w := range d.workers {
		close(w.in)
	}
	d.gate.Unlock()
	go func() {
		d.workersWG.Wait()
		close(d.acks) // only now: workers send acks until they stop
	}()
	select {
	case <-d.ackerDone:
		d.cancel()
	case <-ctx.Done():
		d.cancel()
		return fmt.Errorf("consumer: close: %w", ctx.Err())
	}
	return nil
}

// Stats returns the dispatcher's counters and subscriber counts, plus the
// transport's Counters if the Config has them.
func (d *Dispatcher) Stats() bus.Stats {
	st := bus.Stats{Subscribers: map[string]int{}}
	// Each effect is read before its cause (a panic before the error it
	// also counts, a call before the message's receipt), so that a
	// snapshot taken while they move never shows an effect without its
	// cause.
	for _, w := range d.workers {
		st.HandlerPanics += w.panics.Load()
		st.HandlerErrors += w.errors.Load()
		st.Delivered += w.delivered.Load()
		st.HandlersInvoked += w.invoked.Load()
	}
	st.Handled = d.handled.Load()
	st.Retries = d.retries.Load()
	st.DeadLettered = d.deadLettered.Load()
	st.InFlight = d.inFlight.Load()
	st.Received = d.received.Load()
	d.mu.Lock()
	for _, s := range d.subs {
		if s.types == nil {
			st.WildcardSubscribers++
		}
		for _, t := range s.types {
			st.Subscribers[t]++
		}
	}
	d.mu.Unlock()
	if d.cfg.Counters != nil {
		d.cfg.Counters.AddTo(&st)
	}
	return st
}

// Released returns how many messages were handed back unsettled at Close.
func (d *Dispatcher) Released() uint64 { return d.released.Load() }

// retryQueue is a min-heap of parked items by due time.
type retryQueue []*item

func (q retryQueue) Len() int           { return len(q) }
func (q retryQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q retryQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *retryQueue) Push(x any)        { *q = append(*q, x.(*item)) }
func (q *retryQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return it
}
