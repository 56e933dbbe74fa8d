package bench

// Shared fixtures: the event every benchmark publishes, the envelopes that
// carry it, the sinks that count deliveries and check their order, and the
// watermill set-ups the peers run on. Benchmarks for other buses (Redis
// Streams, ...) build on the same pieces so that their numbers compare.

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// OrderPlaced is the event of every benchmark, ours and the peers'. Its
// value receiver lets the same struct be our payload (a value) and
// watermill's cqrs event (a pointer, as cqrs requires).
type OrderPlaced struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Amount     int64  `json:"amount"`
}

// EventType implements eventsource.Event.
func (OrderPlaced) EventType() string { return "OrderPlaced" }

// Counts of subscribers / handlers the fan-out benchmarks run with.
var fanouts = []int{1, 10}

// benchCtx is the context every publish gets.
var benchCtx = context.Background()

// quietLogger drops the buses' logs (no handler fails in a benchmark; a
// failure is caught by the delivery counts instead).
func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// orderEnvelope is an envelope built up front, as aggregate.Raise builds it.
// Version and Position are what the sinks check order with; the
// benchmarks set them per event on a copy.
func orderEnvelope(aggregateID string) eventsource.Envelope {
	env := eventsource.NewEnvelope(OrderPlaced{OrderID: aggregateID, CustomerID: "customer-7", Amount: 4500})
	env.AggregateType = "Order"
	env.AggregateID = aggregateID
	env.Version = 1
	return env
}

// aggregateIDs returns n aggregate IDs. Event i (0-based) of a run belongs
// to aggregate i%n, at version i/n+1, and carries global position i+1.
func aggregateIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "order-" + strconv.Itoa(i+1)
	}
	return ids
}

// seqSink counts the deliveries of one subscriber and checks that each
// aggregate's versions arrive in order, with no gap or duplicate. It is safe
// for handlers that run on several goroutines, provided one aggregate's
// events are handled by one goroutine at a time (what every bus under test
// promises, except watermill's non-blocking GoChannel, which is why its
// out-of-order count is reported rather than fatal).
type seqSink struct {
	aggregates int
	highest    []int64 // per aggregate: the highest version seen
	want       int64   // deliveries that complete the run
	got        atomic.Int64
	outOfOrder atomic.Int64 // deliveries that were not the successor of the highest version seen
	done       *sync.WaitGroup
}

func newSeqSink(aggregates int, done *sync.WaitGroup) *seqSink {
	return &seqSink{aggregates: aggregates, highest: make([]int64, aggregates), done: done}
}

// expect starts a run of n events; call it before publishing the first one.
func (s *seqSink) expect(n int) {
	s.want = int64(n)
	s.got.Store(0)
	clear(s.highest)
	s.outOfOrder.Store(0)
	s.done.Add(1)
}

// observe records the delivery of the event at global position pos with
// aggregate version version.
func (s *seqSink) observe(pos, version int64) {
	agg := (pos - 1) % int64(s.aggregates)
	if version != s.highest[agg]+1 {
		s.outOfOrder.Add(1)
	}
	s.highest[agg] = max(s.highest[agg], version)
	if s.got.Add(1) == s.want {
		s.done.Done()
	}
}

// sinks is one seqSink per subscriber, sharing one WaitGroup.
type sinks struct {
	all  []*seqSink
	done sync.WaitGroup
}

func newSinks(subscribers, aggregates int) *sinks {
	s := &sinks{}
	for range subscribers {
		s.all = append(s.all, newSeqSink(aggregates, &s.done))
	}
	return s
}

func (s *sinks) expect(n int) {
	for _, k := range s.all {
		k.expect(n)
	}
}

// wait blocks until every subscriber got its events, or fails after timeout.
func (s *sinks) wait(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	done := make(chan struct{})
	go func() {
		s.done.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		tb.Fatalf("deliveries missing after %v: %s", timeout, s.progress())
	}
}

func (s *sinks) progress() string {
	out := ""
	for i, k := range s.all {
		out += fmt.Sprintf(" sub%d=%d/%d", i, k.got.Load(), k.want)
	}
	return out
}

// outOfOrder sums the out-of-order deliveries of every subscriber.
func (s *sinks) outOfOrder() int64 {
	var n int64
	for _, k := range s.all {
		n += k.outOfOrder.Load()
	}
	return n
}

// reportRate reports events/s (events published and delivered to every
// subscriber) and deliveries/s (events times subscribers) over the timed
// part of b.
func reportRate(b *testing.B, events, subscribers int) {
	secs := b.Elapsed().Seconds()
	if secs <= 0 {
		return
	}
	b.ReportMetric(float64(events)/secs, "events/s")
	if subscribers > 1 {
		b.ReportMetric(float64(events*subscribers)/secs, "deliveries/s")
	}
}

// cpuClock measures the CPU time of the whole process over the timed part
// of a benchmark, every goroutine included (handlers, subscribers, GC).
// Unlike ns/op it does not grow when other processes take the machine's
// cores, so cpu-ns/op is the figure to compare across noisy runs.
type cpuClock struct {
	start time.Duration
	ok    bool
}

// startCPU starts a cpuClock; call it right after b.ResetTimer.
func startCPU() cpuClock {
	start, ok := processCPU()
	return cpuClock{start: start, ok: ok}
}

// report adds cpu-ns/op; call it right after b.StopTimer.
func (c cpuClock) report(b *testing.B) {
	end, ok := processCPU()
	if !c.ok || !ok || b.N == 0 {
		return
	}
	b.ReportMetric(float64(end-c.start)/float64(b.N), "cpu-ns/op")
}

// ---- watermill fixtures ------------------------------------------------

// wmLogger is watermill's no-op logger: the peers log nothing either.
var wmLogger = watermill.NopLogger{}

// wmCQRS is watermill's typed path: a cqrs EventBus publishing onto a
// GoChannel that blocks until every subscriber acknowledged, and a cqrs
// EventProcessor running one EventHandler per subscriber on a Router. A
// Publish returns after every handler ran: the closest watermill has to a
// synchronous dispatch.
type wmCQRS struct {
	pubsub  *gochannel.GoChannel
	router  *message.Router
	bus     *cqrs.EventBus
	handled atomic.Int64
}

func newWatermillCQRS(tb testing.TB, handlers int) *wmCQRS {
	tb.Helper()
	w := &wmCQRS{}
	w.pubsub = gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, wmLogger)
	marshaler := cqrs.JSONMarshaler{GenerateName: cqrs.StructName}
	var err error
	w.router, err = message.NewRouter(message.RouterConfig{}, wmLogger)
	if err != nil {
		tb.Fatal(err)
	}
	w.bus, err = cqrs.NewEventBusWithConfig(w.pubsub, cqrs.EventBusConfig{
		GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) { return p.EventName, nil },
		Marshaler:            marshaler,
		Logger:               wmLogger,
	})
	if err != nil {
		tb.Fatal(err)
	}
	processor, err := cqrs.NewEventProcessorWithConfig(w.router, cqrs.EventProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.EventProcessorGenerateSubscribeTopicParams) (string, error) {
			return p.EventName, nil
		},
		SubscriberConstructor: func(cqrs.EventProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return w.pubsub, nil
		},
		Marshaler: marshaler,
		Logger:    wmLogger,
	})
	if err != nil {
		tb.Fatal(err)
	}
	for i := range handlers {
		h := cqrs.NewEventHandler("handler-"+strconv.Itoa(i), func(ctx context.Context, e *OrderPlaced) error {
			w.handled.Add(1)
			return nil
		})
		if err := processor.AddHandlers(h); err != nil {
			tb.Fatal(err)
		}
	}
	go func() {
		if err := w.router.Run(context.Background()); err != nil {
			panic(err)
		}
	}()
	<-w.router.Running()
	return w
}

func (w *wmCQRS) close() {
	_ = w.router.Close()
	_ = w.pubsub.Close()
}

// wmFanout is watermill's plain pub/sub: a GoChannel with subscribers that
// read, check and acknowledge every message on their own goroutine.
type wmFanout struct {
	pubsub *gochannel.GoChannel
	cancel context.CancelFunc
	sinks  *sinks
	wg     sync.WaitGroup
	msg    *message.Message // reused: GoChannel.Publish copies it before returning
}

const wmTopic = "OrderPlaced"

// newWatermillFanout subscribes subscribers readers to a GoChannel built
// with cfg (the zero Config is watermill's default: Publish does not wait).
func newWatermillFanout(tb testing.TB, cfg gochannel.Config, subscribers int) *wmFanout {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &wmFanout{
		pubsub: gochannel.NewGoChannel(cfg, wmLogger),
		cancel: cancel,
		sinks:  newSinks(subscribers, 1),
		msg:    message.NewMessage(watermill.NewUUID(), []byte(`{"order_id":"order-1","customer_id":"customer-7","amount":4500}`)),
	}
	for _, sink := range w.sinks.all {
		msgs, err := w.pubsub.Subscribe(ctx, wmTopic)
		if err != nil {
			tb.Fatal(err)
		}
		w.wg.Go(func() {
			for m := range msgs {
				pos, _ := strconv.ParseInt(m.Metadata.Get("position"), 10, 64)
				m.Ack()
				sink.observe(pos, pos)
			}
		})
	}
	return w
}

// publish publishes n messages carrying positions 1..n.
func (w *wmFanout) publish(tb testing.TB, n int) {
	var buf []byte
	for i := range n {
		buf = strconv.AppendInt(buf[:0], int64(i+1), 10)
		w.msg.Metadata.Set("position", string(buf))
		if err := w.pubsub.Publish(wmTopic, w.msg); err != nil {
			tb.Fatal(err)
		}
	}
}

func (w *wmFanout) close() {
	w.cancel()
	_ = w.pubsub.Close()
	w.wg.Wait()
}

// ---- our fixtures ------------------------------------------------------

// oursFanout is our in-process bus with subscribers asynchronous
// (bus.Async) or synchronous, publishing with Publish or PublishAsync.
type oursFanout struct {
	bus   *bus.InProcess
	sinks *sinks
	ids   []string
	env   eventsource.Envelope
}

// newOursFanout subscribes subscribers sinks to OrderPlaced on a new bus;
// opts are their subscribe options (bus.Async for asynchronous delivery).
func newOursFanout(tb testing.TB, subscribers, aggregates int, busOpts []bus.Option, opts ...bus.SubscribeOption) *oursFanout {
	tb.Helper()
	f := &oursFanout{
		bus:   bus.NewInProcess(append([]bus.Option{bus.WithLogger(quietLogger())}, busOpts...)...),
		sinks: newSinks(subscribers, aggregates),
		ids:   aggregateIDs(aggregates),
		env:   orderEnvelope("order-1"),
	}
	for _, sink := range f.sinks.all {
		_, err := bus.On(f.bus, func(_ context.Context, _ OrderPlaced, env eventsource.Envelope) error {
			sink.observe(env.Position, env.Version)
			return nil
		}, opts...)
		if err != nil {
			tb.Fatal(err)
		}
	}
	return f
}

// publish publishes n events, with PublishAsync when background is set and
// Publish otherwise, one envelope re-stamped per event. The calls are
// direct, not through a func value: that would make the variadic
// []Envelope escape and cost the fixture an allocation per event.
func (f *oursFanout) publish(tb testing.TB, n int, background bool) {
	env := f.env
	a := len(f.ids)
	for i := range n {
		env.AggregateID = f.ids[i%a]
		env.Version = int64(i/a + 1)
		env.Position = int64(i + 1)
		var err error
		if background {
			err = f.bus.PublishAsync(benchCtx, env)
		} else {
			err = f.bus.Publish(benchCtx, env)
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
}

func (f *oursFanout) close(tb testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.bus.Close(ctx); err != nil {
		tb.Fatal(err)
	}
}
