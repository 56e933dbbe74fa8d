package bus

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/eventsource-go/eventsource"
)

// InProcess is the in-process bus. Publish is synchronous: it returns after
// every synchronous handler has run, in registration order, on the caller's
// goroutine. Options add concurrent handler execution, background publishing
// with a bounded queue, and per-subscriber asynchronous delivery (see Async).
//
// The dispatch path reads an immutable routing table through one atomic
// load; subscribing rebuilds the table. Counters live per event type, so
// publishers of different types never write to the same cache line.
type InProcess struct {
	logger      *slog.Logger
	onError     func(context.Context, eventsource.Envelope, error)
	middleware  []Middleware
	concurrency int
	bgWorkers   int
	bgQueue     int

	routes atomic.Pointer[routeTable]

	mu       sync.Mutex // guards everything below, and subscription changes
	subs     []*subscription
	counters map[string]*typeCounters // one per type that ever had a subscriber; never removed
	untyped  *typeCounters            // events of types with no specific subscriber
	asyncs   map[*asyncDelivery]struct{}
	retired  asyncTotals // counters of asynchronous subscriptions that have stopped

	lateDropped atomic.Uint64 // events that reached a stopped asynchronous subscriber

	baseCtx context.Context // handed to asynchronous and background handlers
	abort   context.CancelFunc
	closed  atomic.Bool
	closer  CloseOnce
	asyncWG sync.WaitGroup

	bgOnce    sync.Once
	bgQuit    chan struct{}               // closed by Close: PublishAsync stops waiting for room
	bgGate    sync.RWMutex                // held shared while enqueueing, exclusively to start and stop
	bgStopped bool                        // guarded by bgGate
	bgChans   []chan eventsource.Envelope // guarded by bgGate
	bgWG      sync.WaitGroup
	bgSeed    maphash.Seed

	// bgPublished counts what PublishAsync accepted, for Stats.Published.
	// It sits next to bgTasks, whose cache line PublishAsync writes anyway,
	// rather than in the per-type counters, which the workers write.
	bgTasks     atomic.Int64
	bgPublished atomic.Uint64
}

// typeCounters is padded to its own cache line: publishers of one type
// write only their type's counters.
type typeCounters struct {
	published atomic.Uint64
	invoked   atomic.Uint64
	errors    atomic.Uint64
	panics    atomic.Uint64
	_         [32]byte
}

type routeTable struct {
	byType   map[string]*route
	wildcard *route // for types without a specific subscriber
}

type route struct {
	counters     *typeCounters
	subs         []routeEntry // in registration order, wildcards merged in
	syncHandlers uint64       // entries without asynchronous delivery
}

func newRoute(c *typeCounters, subs []routeEntry) *route {
	r := &route{counters: c, subs: subs}
	for _, e := range subs {
		if e.async == nil {
			r.syncHandlers++
		}
	}
	return r
}

// routeEntry copies what dispatch reads out of the subscription, so that
// fanning out walks one contiguous slice instead of chasing pointers.
type routeEntry struct {
	handler Handler
	async   *asyncDelivery
	sub     *subscription
}

// Option configures an InProcess bus.
type Option func(*InProcess)

// WithLogger sets the logger for handler failures (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(b *InProcess) { b.logger = l } }

// WithErrorHandler is called after a handler fails, with the *HandlerError;
// use it to dead-letter or alert. It runs on the goroutine that ran the
// handler.
func WithErrorHandler(f func(ctx context.Context, env eventsource.Envelope, err error)) Option {
	return func(b *InProcess) { b.onError = f }
}

// WithHandlerMiddleware wraps every handler subscribed afterwards in mws,
// outside each subscription's own (WithMiddleware).
func WithHandlerMiddleware(mws ...Middleware) Option {
	return func(b *InProcess) { b.middleware = append(b.middleware, mws...) }
}

// WithConcurrentHandlers runs up to n synchronous handlers of one event at
// once; Publish still returns only after all of them finished.
func WithConcurrentHandlers(n int) Option { return func(b *InProcess) { b.concurrency = n } }

// WithBackground sets the pool behind PublishAsync: workers goroutines,
// each with a queue of queue events. Events of one aggregate always go to
// the same worker, so they are dispatched in publish order. Default:
// GOMAXPROCS workers with 1024 events each.
func WithBackground(workers, queue int) Option {
	return func(b *InProcess) { b.bgWorkers, b.bgQueue = workers, queue }
}

// NewInProcess returns an in-process bus.
func NewInProcess(opts ...Option) *InProcess {
	b := &InProcess{
		logger:    slog.Default(),
		bgWorkers: runtime.GOMAXPROCS(0),
		bgQueue:   1024,
		counters:  make(map[string]*typeCounters),
		untyped:   new(typeCounters),
		asyncs:    make(map[*asyncDelivery]struct{}),
		bgQuit:    make(chan struct{}),
		bgSeed:    maphash.MakeSeed(),
	}
	for _, o := range opts {
		o(b)
	}
	b.bgWorkers = max(b.bgWorkers, 1)
	b.bgQueue = max(b.bgQueue, 1)
	b.baseCtx, b.abort = context.WithCancel(context.Background())
	b.routes.Store(&routeTable{byType: map[string]*route{}, wildcard: &route{counters: b.untyped}})
	return b
}

// Start is a no-op that exists to satisfy Bus. Broker buses defer
// consumption to Start so that no backlog is acknowledged before its
// handlers exist; the in-process bus has no backlog to lose, so delivery to
// a subscription begins when Subscribe returns. Start is idempotent and
// returns ErrClosed after Close.
func (b *InProcess) Start(context.Context) error {
	if b.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Publish dispatches events in order. Synchronous handlers have run when it
// returns; asynchronous subscribers have the events in their buffers.
// Handler failures are counted and logged, never returned. It fails only for
// an invalid envelope (nothing is dispatched), a closed bus, or a ctx that
// ends while a blocking subscriber's buffer is full.
func (b *InProcess) Publish(ctx context.Context, events ...eventsource.Envelope) error {
	if b.closed.Load() {
		return ErrClosed
	}
	if err := validateEnvelopes(events); err != nil {
		return err
	}
	for i := range events {
		r := b.routeFor(events[i].Type)
		r.counters.published.Add(1)
		if err := b.dispatch(ctx, r, &events[i]); err != nil {
			return err
		}
	}
	return nil
}

func validateEnvelopes(events []eventsource.Envelope) error {
	for i := range events {
		if events[i].Type == "" || events[i].Event == nil {
			return fmt.Errorf("%w: envelope %d has no type or no payload", eventsource.ErrInvalidEvent, i)
		}
	}
	return nil
}

// routeFor returns the current route of an event type.
func (b *InProcess) routeFor(eventType string) *route {
	rt := b.routes.Load()
	if r := rt.byType[eventType]; r != nil {
		return r
	}
	return rt.wildcard
}

// dispatch hands env to r's subscribers. Callers count it as published:
// Publish in r's counters, PublishAsync in bgPublished when it accepts.
func (b *InProcess) dispatch(ctx context.Context, r *route, env *eventsource.Envelope) error {
	ctx = HandlerContext(ctx, env)
	if b.concurrency > 1 && len(r.subs) > 1 {
		return b.dispatchConcurrently(ctx, r, env)
	}
	// Every synchronous handler is called, a panicking one included, so
	// the count is known before the calls.
	if r.syncHandlers > 0 {
		r.counters.invoked.Add(r.syncHandlers)
	}
	var err error
	for next := 0; next < len(r.subs); {
		next = b.runFrom(ctx, r, *env, next, &err)
	}
	return err
}

// runFrom runs r's handlers from index start on. It returns len(r.subs), or,
// when a handler panics, the index after it, so that dispatch resumes with
// the next handler. One deferred recover per event, not one per handler,
// keeps fan-out cheap.
func (b *InProcess) runFrom(ctx context.Context, r *route, env eventsource.Envelope, start int, errp *error) (next int) {
	i := start
	defer func() {
		if p := recover(); p != nil {
			s := r.subs[i].sub
			b.handlerFailed(ctx, r.counters, s, &env, panicError(s, &env, p))
			next = i + 1
		}
	}()
	for ; i < len(r.subs); i++ {
		e := &r.subs[i]
		if e.async != nil {
			*errp = errors.Join(*errp, e.async.enqueue(ctx, &env, &b.lateDropped))
			continue
		}
		if err := e.handler.Handle(ctx, env); err != nil {
			b.handlerFailed(ctx, r.counters, e.sub, &env, &HandlerError{Handler: e.sub.name, EventType: env.Type, EventID: env.ID.String(), Err: err})
		}
	}
	return i
}

func (b *InProcess) dispatchConcurrently(ctx context.Context, r *route, original *eventsource.Envelope) error {
	// The goroutines get their own copy, so the caller's envelope stays on
	// its stack on the synchronous path.
	env := new(eventsource.Envelope)
	*env = *original
	var wg sync.WaitGroup
	sem := make(chan struct{}, b.concurrency)
	var err error
	for _, e := range r.subs {
		s := e.sub
		if s.async != nil {
			err = errors.Join(err, s.async.enqueue(ctx, env, &b.lateDropped))
			continue
		}
		sem <- struct{}{}
		// Counted before the call, as on the sequential path, so that Stats
		// never shows the call's error without the call.
		r.counters.invoked.Add(1)
		wg.Go(func() {
			defer func() { <-sem }()
			if herr := s.call(ctx, env); herr != nil {
				b.handlerFailed(ctx, r.counters, s, env, herr)
			}
		})
	}
	wg.Wait()
	return err
}

func (b *InProcess) handlerFailed(ctx context.Context, c *typeCounters, s *subscription, env *eventsource.Envelope, err error) {
	c.errors.Add(1)
	if errors.Is(err, ErrHandlerPanic) {
		c.panics.Add(1)
	}
	b.report(ctx, s, env, err)
}

// busName is the in-process bus's "bus" key in its log lines; the broker
// buses log theirs ("redis", "rabbitmq", "kafka").
const busName = "inprocess"

// report logs a handler failure and hands it to the error hook.
func (b *InProcess) report(ctx context.Context, s *subscription, env *eventsource.Envelope, err error) {
	b.logger.LogAttrs(ctx, slog.LevelError, "event handler failed",
		slog.String("bus", busName),
		slog.String("handler", s.name),
		slog.String("event_type", env.Type),
		slog.String("event_id", env.ID.String()),
		slog.String("aggregate_id", env.AggregateID),
		slog.Any("error", err))
	if b.onError != nil {
		b.onError(ctx, *env, err)
	}
}

// PublishAsync queues events for the background workers and returns; the
// events it accepted are in Stats.Published by then. It blocks while the
// chosen worker's queue is full, until ctx ends or Close begins (then it
// returns ErrClosed). Handlers receive a context that lives as long as the
// bus, not ctx.
func (b *InProcess) PublishAsync(ctx context.Context, events ...eventsource.Envelope) error {
	if b.closed.Load() {
		return ErrClosed
	}
	if err := validateEnvelopes(events); err != nil {
		return err
	}
	b.bgOnce.Do(b.startBackground)
	b.bgGate.RLock()
	defer b.bgGate.RUnlock()
	if b.bgStopped {
		return ErrClosed
	}
	for i := range events {
		ch := b.bgChans[maphash.String(b.bgSeed, events[i].AggregateID)%uint64(len(b.bgChans))]
		// Counted before the send, so that Stats never shows a worker's
		// deliveries ahead of Published; taken back if the send fails.
		b.bgPublished.Add(1)
		b.bgTasks.Add(1)
		// Try without blocking first: a select on one channel with a
		// default is much cheaper than one that waits on three.
		select {
		case ch <- events[i]:
			continue
		default:
		}
		var err error
		select {
		case ch <- events[i]:
			continue
		case <-ctx.Done():
			err = fmt.Errorf("bus: publish in background: %w", ctx.Err())
		case <-b.bgQuit:
			err = ErrClosed
		}
		b.bgPublished.Add(^uint64(0))
		b.bgTasks.Add(-1)
		return err
	}
	return nil
}

// startBackground starts the workers unless Close came first. It holds the
// gate so that Close either sees the workers and stops them or none start.
func (b *InProcess) startBackground() {
	b.bgGate.Lock()
	defer b.bgGate.Unlock()
	if b.bgStopped {
		return
	}
	b.bgChans = make([]chan eventsource.Envelope, b.bgWorkers)
	for i := range b.bgChans {
		ch := make(chan eventsource.Envelope, b.bgQueue)
		b.bgChans[i] = ch
		b.bgWG.Go(func() {
			for env := range ch {
				if b.baseCtx.Err() != nil {
					b.lateDropped.Add(1)
				} else if err := b.dispatch(b.baseCtx, b.routeFor(env.Type), &env); err != nil {
					b.logger.LogAttrs(b.baseCtx, slog.LevelWarn, "background dispatch incomplete",
						slog.String("bus", busName), slog.String("event_type", env.Type),
						slog.String("event_id", env.ID.String()), slog.Any("error", err))
				}
				b.bgTasks.Add(-1)
			}
		})
	}
}

// Subscribe registers h for eventType.
func (b *InProcess) Subscribe(eventType string, h Handler, opts ...SubscribeOption) (Subscription, error) {
	return b.SubscribeTypes([]string{eventType}, h, opts...)
}

// SubscribeTypes registers h once for several event types: an asynchronous
// subscriber then keeps one queue, so h sees all of them in publish order.
func (b *InProcess) SubscribeTypes(eventTypes []string, h Handler, opts ...SubscribeOption) (Subscription, error) {
	if len(eventTypes) == 0 {
		return nil, fmt.Errorf("%w: no event types", ErrInvalidSubscription)
	}
	if slices.Contains(eventTypes, "") {
		return nil, fmt.Errorf("%w: empty event type", ErrInvalidSubscription)
	}
	return b.subscribe(slices.Compact(slices.Sorted(slices.Values(eventTypes))), h, opts)
}

// SubscribeAll registers h for every event type.
func (b *InProcess) SubscribeAll(h Handler, opts ...SubscribeOption) (Subscription, error) {
	return b.subscribe(nil, h, opts)
}

// subscribe registers h for eventTypes, or for everything when it is nil.
func (b *InProcess) subscribe(eventTypes []string, h Handler, opts []SubscribeOption) (Subscription, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: nil handler", ErrInvalidSubscription)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// Checked under mu: Close collects the asynchronous subscriptions under
	// mu after setting closed, so it stops every one made before this.
	if b.closed.Load() {
		return nil, ErrClosed
	}
	// Named as on every bus (see Handler identity), not per subscription:
	// a name is a metric label and a log key, and one that grew with each
	// subscription would grow their series without bound.
	cfg := ApplySubscribeOptions(DefaultSubscriptionName(eventTypes), opts)
	s := &subscription{bus: b, eventTypes: eventTypes, handler: ChainFor(SubscriptionInfo{Name: cfg.Name, EventTypes: eventTypes}, h, b.middleware, cfg.Middleware), name: cfg.Name}
	if cfg.Async != nil {
		if cfg.Async.Buffer < 1 {
			return nil, fmt.Errorf("%w: async buffer must be at least 1, got %d", ErrInvalidSubscription, cfg.Async.Buffer)
		}
		// enqueue treats anything but DropNewest as Block: an unknown
		// policy would silently apply backpressure the caller did not ask for.
		if p := cfg.Async.Overflow; p != Block && p != DropNewest {
			return nil, fmt.Errorf("%w: unknown overflow policy %v", ErrInvalidSubscription, p)
		}
		s.async = &asyncDelivery{sub: s, ch: make(chan eventsource.Envelope, cfg.Async.Buffer),
			policy: cfg.Async.Overflow, quit: make(chan struct{})}
		b.asyncs[s.async] = struct{}{}
		b.asyncWG.Go(s.async.run)
	}
	for _, t := range eventTypes {
		if b.counters[t] == nil {
			b.counters[t] = new(typeCounters)
		}
	}
	b.subs = append(b.subs, s)
	b.rebuildLocked()
	return s, nil
}

// rebuildLocked publishes a new routing table; b.mu must be held.
func (b *InProcess) rebuildLocked() {
	var wildcards []routeEntry
	types := map[string]bool{}
	for _, s := range b.subs {
		if s.eventTypes == nil {
			wildcards = append(wildcards, s.entry())
		}
		for _, t := range s.eventTypes {
			types[t] = true
		}
	}
	rt := &routeTable{byType: make(map[string]*route, len(types)), wildcard: newRoute(b.untyped, wildcards)}
	for t := range types {
		var merged []routeEntry
		for _, s := range b.subs {
			if s.eventTypes == nil || slices.Contains(s.eventTypes, t) {
				merged = append(merged, s.entry())
			}
		}
		rt.byType[t] = newRoute(b.counters[t], merged)
	}
	b.routes.Store(rt)
}

// Stats returns a snapshot of the counters.
func (b *InProcess) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := Stats{Subscribers: map[string]int{}}
	// Every counter is loaded after those that are incremented later for
	// the same event (handler calls before publishes, errors before calls,
	// asynchronous subscribers before the publishes that fed them), so
	// that a snapshot taken while events flow never shows an effect
	// without its cause.
	totals := b.retired
	for a := range b.asyncs {
		totals.add(a.totals())
	}
	add := func(c *typeCounters) {
		st.HandlerPanics += c.panics.Load()
		st.HandlerErrors += c.errors.Load()
		invoked := c.invoked.Load()
		st.HandlersInvoked += invoked
		st.Delivered += invoked
		st.Published += c.published.Load()
	}
	for _, c := range b.counters {
		add(c)
	}
	add(b.untyped)
	st.Published += b.bgPublished.Load()
	st.Delivered += totals.enqueued
	st.HandlersInvoked += totals.invoked
	st.HandlerErrors += totals.errors
	st.HandlerPanics += totals.panics
	st.Dropped = totals.dropped + b.lateDropped.Load()
	st.InFlight = int64(totals.enqueued - totals.processed)
	st.BackgroundTasks = b.bgTasks.Load()
	for _, s := range b.subs {
		if s.eventTypes == nil {
			st.WildcardSubscribers++
		}
		for _, t := range s.eventTypes {
			st.Subscribers[t]++
		}
	}
	return st
}

// Close stops accepting events, drains the background queue and every
// asynchronous subscriber's buffer, and waits for their goroutines.
// Publishers waiting for room in a full queue or buffer return ErrClosed.
// If ctx ends first, the handlers' context is cancelled, what is still
// queued is dropped (and counted), handlers already running are left to
// return, and Close returns ctx.Err(); the bus's goroutines end once those
// handlers return. Synchronous Publish calls already in progress finish on
// their callers' goroutines; one that reaches an asynchronous subscriber
// Close has stopped returns ErrClosed (the event is counted as dropped).
// Later calls return the first call's outcome.
func (b *InProcess) Close(ctx context.Context) error {
	return b.closer.Do(ctx, func() error {
		b.closed.Store(true)
		return b.close(ctx)
	})
}

func (b *InProcess) close(ctx context.Context) error {
	// A PublishAsync waiting for room holds the gate shared; waking it
	// first keeps Close from waiting on a worker stuck in a handler.
	close(b.bgQuit)
	b.bgGate.Lock()
	b.bgStopped = true
	for _, ch := range b.bgChans {
		close(ch)
	}
	b.bgGate.Unlock()
	err := waitContext(ctx, &b.bgWG)

	b.mu.Lock()
	asyncs := make([]*asyncDelivery, 0, len(b.asyncs))
	for a := range b.asyncs {
		asyncs = append(asyncs, a)
	}
	b.mu.Unlock()
	for _, a := range asyncs {
		a.stop()
	}
	if err == nil {
		err = waitContext(ctx, &b.asyncWG)
	}
	b.abort()
	return err
}

func waitContext(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bus: close: %w", ctx.Err())
	}
}

type subscription struct {
	bus        *InProcess
	eventTypes []string // sorted; nil for a wildcard
	handler    Handler
	name       string
	async      *asyncDelivery
	removed    bool // guarded by bus.mu
}

func (s *subscription) entry() routeEntry {
	return routeEntry{handler: s.handler, async: s.async, sub: s}
}

// call runs the handler, turning a panic into a *HandlerError.
func (s *subscription) call(ctx context.Context, env *eventsource.Envelope) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(s, env, p)
		}
	}()
	if err := s.handler.Handle(ctx, *env); err != nil {
		return &HandlerError{Handler: s.name, EventType: env.Type, EventID: env.ID.String(), Err: err}
	}
	return nil
}

func panicError(s *subscription, env *eventsource.Envelope, p any) *HandlerError {
	return &HandlerError{Handler: s.name, EventType: env.Type, EventID: env.ID.String(),
		Err: ErrHandlerPanic, Panic: p, Stack: debug.Stack()}
}

// Unsubscribe removes the subscription. An asynchronous subscriber handles
// what its buffer already holds, then stops; a publisher waiting for room in
// that buffer skips this subscriber (counted as dropped).
func (s *subscription) Unsubscribe() error {
	b := s.bus
	b.mu.Lock()
	if s.removed {
		b.mu.Unlock()
		return nil
	}
	s.removed = true
	if i := slices.Index(b.subs, s); i >= 0 {
		b.subs = slices.Delete(b.subs, i, i+1)
	}
	b.rebuildLocked()
	b.mu.Unlock()
	if s.async != nil {
		s.async.stop()
	}
	return nil
}

// asyncDelivery is one subscriber's buffer and the goroutine draining it.
type asyncDelivery struct {
	sub    *subscription
	ch     chan eventsource.Envelope
	policy OverflowPolicy

	gate     sync.RWMutex  // shared while sending, exclusive to stop
	stopped  bool          // guarded by gate
	quit     chan struct{} // closed by stop: senders stop waiting for room
	quitOnce sync.Once

	enqueued, processed, invoked, errors, panics, dropped atomic.Uint64
}

type asyncTotals struct {
	enqueued, processed, invoked, errors, panics, dropped uint64
}

func (t *asyncTotals) add(o asyncTotals) {
	t.enqueued += o.enqueued
	t.processed += o.processed
	t.invoked += o.invoked
	t.errors += o.errors
	t.panics += o.panics
	t.dropped += o.dropped
}

// totals loads the counters latest first (processed, panics, errors,
// invoked, enqueued), so that errors never outnumber calls in a snapshot.
func (a *asyncDelivery) totals() asyncTotals {
	var t asyncTotals
	t.processed = a.processed.Load()
	t.panics = a.panics.Load()
	t.errors = a.errors.Load()
	t.invoked = a.invoked.Load()
	t.enqueued = a.enqueued.Load()
	t.dropped = a.dropped.Load()
	// A publisher counts an event after its send succeeds, and the
	// subscriber may have handled it by then: what it has called or
	// processed was enqueued, counted or not yet. Taking the larger keeps
	// in flight from going negative and enqueued monotonic, never above
	// the truth (counting before the send would need taking back a send
	// that fails, and a counter going backwards).
	t.enqueued = max(t.enqueued, t.invoked, t.processed)
	return t
}

func (a *asyncDelivery) enqueue(ctx context.Context, env *eventsource.Envelope, late *atomic.Uint64) error {
	a.gate.RLock()
	defer a.gate.RUnlock()
	if a.stopped {
		// A Publish begun before Close may get here after Close stopped
		// the subscriber: the event is lost to it, so say so, as the
		// waiting path below does. After Unsubscribe it is simply not
		// delivered.
		late.Add(1)
		if a.sub.bus.closed.Load() {
			return ErrClosed
		}
		return nil
	}
	select {
	case a.ch <- *env:
		a.enqueued.Add(1)
		return nil
	default:
	}
	if a.policy == DropNewest {
		a.dropped.Add(1)
		return nil
	}
	select {
	case a.ch <- *env:
		a.enqueued.Add(1)
		return nil
	case <-ctx.Done():
		a.dropped.Add(1)
		return fmt.Errorf("bus: subscriber %q is full: %w", a.sub.name, ctx.Err())
	case <-a.quit:
		// Unsubscribed or closing: as if it had stopped before this call.
		late.Add(1)
		if a.sub.bus.closed.Load() {
			return ErrClosed
		}
		return nil
	}
}

func (a *asyncDelivery) run() {
	b := a.sub.bus
	for env := range a.ch {
		if b.baseCtx.Err() != nil {
			a.dropped.Add(1)
		} else {
			a.invoked.Add(1)
			if err := a.sub.call(HandlerContext(b.baseCtx, &env), &env); err != nil {
				a.errors.Add(1)
				if errors.Is(err, ErrHandlerPanic) {
					a.panics.Add(1)
				}
				b.report(b.baseCtx, a.sub, &env, err)
			}
		}
		a.processed.Add(1)
	}
	b.mu.Lock()
	delete(b.asyncs, a)
	b.retired.add(a.totals())
	b.mu.Unlock()
}

// stop closes the buffer once no publisher is sending; run drains it.
// Publishers waiting for room are woken first: they hold the gate shared,
// and the handler they wait on may never return.
func (a *asyncDelivery) stop() {
	a.quitOnce.Do(func() { close(a.quit) })
	a.gate.Lock()
	defer a.gate.Unlock()
	if !a.stopped {
		a.stopped = true
		close(a.ch)
	}
}
