package bench

// Shared harness of the broker benchmarks (Redis Streams, RabbitMQ,
// Kafka): the publishing loops, the timed end-to-end / publish-only /
// consume-only runs over any bus.Bus (ours) or watermill
// Publisher/Subscriber (the peers), and what they report. The broker files
// keep only what is theirs: opening the bus or peer, cleaning up, waiting
// until the broker has every acknowledgement, and their raw ceilings.

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// brokerLoad is how a broker benchmark publishes: publishers goroutines
// at once, batch events per Publish call, events spread over aggregates
// aggregates (a multiple of publishers, so an aggregate belongs to one
// publisher).
type brokerLoad struct {
	publishers int
	batch      int
	aggregates int
}

// wmPayload is the JSON payload every watermill message carries: our
// events' payload.
var wmPayload = []byte(`{"order_id":"order-1","customer_id":"customer-7","amount":4500}`)

// timed runs run as the timed part of b, then reports cpu-ns/op and
// events/s (one op is one event).
func timed(b *testing.B, run func()) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	run()
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
}

// publishBatches runs l.publishers goroutines; goroutine g sends the
// items of events i < n with i%P == g, in order, in batches of l.batch
// (the last one shorter). The first send error stops its goroutine and
// fails b once every goroutine returned.
func publishBatches[T any](b *testing.B, l brokerLoad, n int, item func(i int) T, send func(batch []T) error) {
	var wg sync.WaitGroup
	errs := make(chan error, l.publishers)
	for g := range l.publishers {
		wg.Go(func() {
			batch := make([]T, 0, l.batch)
			for i := g; i < n; i += l.publishers {
				batch = append(batch, item(i))
				if len(batch) == l.batch || i+l.publishers >= n {
					if err := send(batch); err != nil {
						errs <- err
						return
					}
					batch = batch[:0]
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// publish publishes n events, positions 1..n, on bb in batches, from
// l.publishers goroutines at once, as a service publishes from its
// concurrent requests. Publisher g publishes the events i with i%P == g in
// order, which keeps each aggregate's versions in order.
func (l brokerLoad) publish(b *testing.B, bb bus.Bus, n int) {
	ids := aggregateIDs(l.aggregates)
	base := orderEnvelope(ids[0])
	publishBatches(b, l, n, func(i int) eventsource.Envelope {
		env := base
		env.AggregateID = ids[i%l.aggregates]
		env.Version = int64(i/l.aggregates + 1)
		env.Position = int64(i + 1)
		return env
	}, func(batch []eventsource.Envelope) error { return bb.Publish(benchCtx, batch...) })
}

// publishWatermill publishes n messages to topic like publish: from
// l.publishers goroutines, in batches of l.batch, each carrying our
// events' JSON payload and its position.
func (l brokerLoad) publishWatermill(b *testing.B, p message.Publisher, topic string, n int) {
	publishBatches(b, l, n, func(i int) *message.Message {
		m := message.NewMessage(watermill.NewUUID(), wmPayload)
		m.Metadata.Set("position", strconv.Itoa(i+1))
		return m
	}, func(batch []*message.Message) error { return p.Publish(topic, batch...) })
}

// rawBatches publishes n events from l.publishers goroutines without any
// library of ours or watermill's: goroutine g sends every P-th batch of
// l.batch events (the last one shorter), starting with batch g, through
// send(k), which newSender(g) returns (it runs on b's goroutine and may
// fail b). A send error fails b and stops its goroutine.
func (l brokerLoad) rawBatches(b *testing.B, n int, newSender func(g int) (send func(k int) error)) {
	var wg sync.WaitGroup
	for g := range l.publishers {
		send := newSender(g)
		wg.Go(func() {
			for done := g * l.batch; done < n; done += l.publishers * l.batch {
				if err := send(min(l.batch, n-done)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// subscribe subscribes one in-order sink to bb and returns it, expecting n.
func (l brokerLoad) subscribe(b *testing.B, bb bus.Bus, n int) *sinks {
	s := newSinks(1, l.aggregates)
	s.expect(n)
	sink := s.all[0]
	if _, err := bus.On(bb, func(_ context.Context, _ OrderPlaced, env eventsource.Envelope) error {
		sink.observe(env.Position, env.Version)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	if err := bb.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}

// closeAtEnd closes a bus of ours when b ends, failing b if that fails.
func closeAtEnd(b *testing.B, c interface{ Close(context.Context) error }) {
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			b.Error(err)
		}
	})
}

// waitHandled waits until bb has handled (and acknowledged) n events.
func waitHandled(b *testing.B, bb bus.Bus, n int) {
	deadline := time.Now().Add(deliveryTimeout)
	for bb.Stats().Handled < uint64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("acked %d of %d", bb.Stats().Handled, n)
		}
		time.Sleep(100 * time.Microsecond) // polling interval, bounded by the deadline
	}
}

func checkOrder(b *testing.B, s *sinks) {
	if n := s.outOfOrder(); n != 0 {
		b.Fatalf("%d deliveries out of order", n)
	}
}

// ---- ours ---------------------------------------------------------------

// benchOursPublish times publishing b.N events on bb.
func benchOursPublish(b *testing.B, l brokerLoad, bb bus.Bus) {
	timed(b, func() { l.publish(b, bb, b.N) })
}

// benchOursEndToEnd times publishing b.N events on bb, their delivery to
// one in-order sink and settled (the broker has every acknowledgement).
// The sink subscribes before the timer starts, or within it with
// subscribeTimed.
func benchOursEndToEnd(b *testing.B, l brokerLoad, bb bus.Bus, subscribeTimed bool, settled func(b *testing.B, n int)) {
	benchOursDeliver(b, l, bb, subscribeTimed, true, settled)
}

// benchOursConsume times subscribing one in-order sink to bb, which has
// b.N events waiting (published before), their delivery and settled.
func benchOursConsume(b *testing.B, l brokerLoad, bb bus.Bus, settled func(b *testing.B, n int)) {
	benchOursDeliver(b, l, bb, true, false, settled)
}

func benchOursDeliver(b *testing.B, l brokerLoad, bb bus.Bus, subscribeTimed, publish bool, settled func(b *testing.B, n int)) {
	var s *sinks
	if !subscribeTimed {
		s = l.subscribe(b, bb, b.N)
	}
	timed(b, func() {
		if subscribeTimed {
			s = l.subscribe(b, bb, b.N)
		}
		if publish {
			l.publish(b, bb, b.N)
		}
		s.wait(b, deliveryTimeout)
		settled(b, b.N)
	})
	checkOrder(b, s)
}

// ---- watermill ------------------------------------------------------------

// wmPeer is a watermill peer on one broker.
type wmPeer struct {
	name  string // in failure messages, e.g. "watermill-amqp"
	pub   message.Publisher
	sub   message.Subscriber // nil for publish-only
	topic string
}

// benchWatermillPublish times publishing b.N messages with w.pub.
func benchWatermillPublish(b *testing.B, l brokerLoad, w wmPeer) {
	timed(b, func() { l.publishWatermill(b, w.pub, w.topic, b.N) })
}

// benchWatermillDeliver times subscribing w.sub, with a handler that acks
// each message, until it had b.N messages and settled (nil: nothing to
// wait for) returned. Unless prefilled (consume-only: the b.N messages
// are already there), w.pub publishes them within the timer.
func benchWatermillDeliver(b *testing.B, l brokerLoad, w wmPeer, prefilled bool, settled func(b *testing.B, n int)) {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	timed(b, func() {
		msgs, err := w.sub.Subscribe(ctx, w.topic)
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			n := 0
			for m := range msgs {
				m.Ack()
				if n++; n == b.N {
					close(done)
				}
			}
		}()
		if !prefilled {
			l.publishWatermill(b, w.pub, w.topic, b.N)
		}
		select {
		case <-done:
		case <-time.After(deliveryTimeout):
			b.Fatal(w.name + ": deliveries missing")
		}
		if settled != nil {
			settled(b, b.N)
		}
	})
}
