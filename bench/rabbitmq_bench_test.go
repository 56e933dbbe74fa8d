package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	rabbitbus "github.com/eventsource-go/eventsource/bus/rabbitmq"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

// rabbitBatch is how many events one Publish call carries (ours: one
// pipelined batch, confirmed once; watermill-amqp: one channel per call,
// one basic.publish per message).
const rabbitBatch = 100

// rabbitAggregates is how many aggregates the events are spread over.
const rabbitAggregates = 64

// rabbitPublishers is how many goroutines publish at once.
const rabbitPublishers = 4

// BenchmarkRabbitMQ compares our RabbitMQ bus with watermill-amqp v1.1.4
// on the same broker, one process, small events, durable queues and
// persistent messages on both sides. One op is one event.
//
//   - EndToEnd: b.N events published (ours: with publisher confirms),
//     handled by one subscriber and acknowledged before the timer stops.
//     Ours must deliver every aggregate's versions in order.
//   - PublishOnly: b.N events published into a bound queue nobody reads.
//     watermill-amqp v1.1.4 has no publisher confirms: its default
//     publishes without any broker acknowledgement (a weaker promise than
//     ours); the -tx case wraps each Publish call in an AMQP transaction,
//     its only way to learn the broker has the messages.
//   - PublishOnly/amqp091-confirms: raw amqp091-go, one pre-encoded
//     envelope, rabbitPublishers channels in confirm mode, each publishing
//     rabbitBatch messages and then waiting for their confirmations: the
//     ceiling of confirmed publishing on this broker, with no encoding.
//   - ConsumeOnly: b.N events already queued (untimed); the timer runs
//     from subscribing to the last acknowledgement.
//
// Set EVENTSOURCE_AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/) to
// run it.
func BenchmarkRabbitMQ(b *testing.B) {
	url := testenv.URL(b, "EVENTSOURCE_AMQP_URL", "start RabbitMQ and set EVENTSOURCE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ to run the RabbitMQ benchmarks")
	b.Run("EndToEnd/ours", func(b *testing.B) { benchRabbitOursEndToEnd(b, url) })
	b.Run("EndToEnd/watermill-amqp", func(b *testing.B) { benchRabbitWatermillEndToEnd(b, url, false) })
	b.Run("PublishOnly/ours", func(b *testing.B) { benchRabbitOursPublish(b, url) })
	b.Run("PublishOnly/watermill-amqp", func(b *testing.B) { benchRabbitWatermillPublish(b, url, false) })
	b.Run("PublishOnly/watermill-amqp-tx", func(b *testing.B) { benchRabbitWatermillPublish(b, url, true) })
	b.Run("PublishOnly/amqp091-confirms", func(b *testing.B) { benchRabbitRawConfirms(b, url) })
	b.Run("ConsumeOnly/ours", func(b *testing.B) { benchRabbitOursConsume(b, url) })
	b.Run("ConsumeOnly/watermill-amqp", func(b *testing.B) { benchRabbitWatermillEndToEnd(b, url, true) })
}

var rabbitBenchSeq atomic.Int64

// rabbitNames returns a fresh exchange name; the exchange and the named
// queues (filled in by the case) are deleted when b ends.
func rabbitNames(b *testing.B, url string) (exchange string, queues *[]string, raw *amqp.Channel) {
	b.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	exchange = fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), rabbitBenchSeq.Add(1))
	queues = new([]string)
	b.Cleanup(func() {
		for _, q := range *queues {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(exchange, false, false)
		_ = conn.Close()
	})
	return exchange, queues, ch
}

func rabbitConfig(url, exchange string) rabbitbus.Config {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[OrderPlaced](r)
	return rabbitbus.Config{URL: url, Registry: r, Exchange: exchange, Group: "bench", Logger: quietLogger()}
}

func openRabbitBus(b *testing.B, cfg rabbitbus.Config, queues *[]string) *rabbitbus.Bus {
	b.Helper()
	rb, err := rabbitbus.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	n := rb.Names()
	*queues = append(*queues, append([]string{n.Queue, n.DeadLetterQueue}, n.RetryQueues...)...)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rb.Close(ctx); err != nil {
			b.Error(err)
		}
	})
	return rb
}

// publishRabbit publishes n events like publishRedis: rabbitPublishers
// goroutines, each owning whole aggregates, in batches of rabbitBatch.
func publishRabbit(b *testing.B, rb bus.Bus, n int) {
	ids := aggregateIDs(rabbitAggregates)
	base := orderEnvelope(ids[0])
	var wg sync.WaitGroup
	errs := make(chan error, rabbitPublishers)
	for g := range rabbitPublishers {
		wg.Go(func() {
			batch := make([]eventsource.Envelope, 0, rabbitBatch)
			for i := g; i < n; i += rabbitPublishers {
				env := base
				env.AggregateID = ids[i%rabbitAggregates]
				env.Version = int64(i/rabbitAggregates + 1)
				env.Position = int64(i + 1)
				batch = append(batch, env)
				if len(batch) == rabbitBatch || i+rabbitPublishers >= n {
					if err := rb.Publish(benchCtx, batch...); err != nil {
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

func subscribeRabbitSink(b *testing.B, rb bus.Bus, n int) *sinks {
	s := newSinks(1, rabbitAggregates)
	s.expect(n)
	sink := s.all[0]
	if _, err := bus.On(rb, func(_ context.Context, _ OrderPlaced, env eventsource.Envelope) error {
		sink.observe(env.Position, env.Version)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return s
}

func waitHandled(b *testing.B, rb bus.Bus, n int) {
	deadline := time.Now().Add(deliveryTimeout)
	for rb.Stats().Handled < uint64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("acked %d of %d", rb.Stats().Handled, n)
		}
		time.Sleep(100 * time.Microsecond) // polling interval, bounded by the deadline
	}
}

func benchRabbitOursEndToEnd(b *testing.B, url string) {
	exchange, queues, _ := rabbitNames(b, url)
	rb := openRabbitBus(b, rabbitConfig(url, exchange), queues)
	s := subscribeRabbitSink(b, rb, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	publishRabbit(b, rb, b.N)
	s.wait(b, deliveryTimeout)
	waitHandled(b, rb, b.N)
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
	checkOrder(b, s)
}

// bindSinkQueue declares a durable queue bound to every routing key of
// exchange, as a subscribed group's queue would be, without consuming.
func bindSinkQueue(b *testing.B, raw *amqp.Channel, exchange, queue, key string, queues *[]string) {
	if _, err := raw.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	*queues = append(*queues, queue)
	if err := raw.QueueBind(queue, key, exchange, false, nil); err != nil {
		b.Fatal(err)
	}
}

func benchRabbitOursPublish(b *testing.B, url string) {
	exchange, queues, raw := rabbitNames(b, url)
	rb := openRabbitBus(b, rabbitConfig(url, exchange), queues)
	bindSinkQueue(b, raw, exchange, exchange+".sink", "#", queues)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	publishRabbit(b, rb, b.N)
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
}

func benchRabbitOursConsume(b *testing.B, url string) {
	exchange, queues, raw := rabbitNames(b, url)
	cfg := rabbitConfig(url, exchange)
	pub := openRabbitBus(b, cfg, queues)
	// The group's queue with the binding Subscribe makes, filled before.
	bindSinkQueue(b, raw, exchange, cfg.WithDefaults().Names().Queue, "*.OrderPlaced", queues)
	publishRabbit(b, pub, b.N)
	rb := openRabbitBus(b, cfg, queues)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	s := subscribeRabbitSink(b, rb, b.N)
	s.wait(b, deliveryTimeout)
	waitHandled(b, rb, b.N)
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
	checkOrder(b, s)
}

// ---- watermill-amqp -----------------------------------------------------

// watermillAMQPConfig is watermill-amqp's durable pub/sub (a fanout
// exchange per topic, a durable queue per subscriber, persistent
// messages) with the same prefetch as ours.
func watermillAMQPConfig(url string, tx bool) wmamqp.Config {
	cfg := wmamqp.NewDurablePubSubConfig(url, wmamqp.GenerateQueueNameTopicNameWithSuffix("sink"))
	cfg.Consume.Qos.PrefetchCount = 1024
	cfg.Publish.Transactional = tx
	return cfg
}

func watermillAMQPPublisher(b *testing.B, url string, tx bool) *wmamqp.Publisher {
	p, err := wmamqp.NewPublisher(watermillAMQPConfig(url, tx), watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	return p
}

func watermillAMQPSubscriber(b *testing.B, url string) *wmamqp.Subscriber {
	s, err := wmamqp.NewSubscriber(watermillAMQPConfig(url, false), watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// publishWatermillAMQP publishes n messages from rabbitPublishers
// goroutines, in batches of rabbitBatch, each carrying the JSON payload
// our events carry.
func publishWatermillAMQP(b *testing.B, p *wmamqp.Publisher, topic string, n int) {
	payload := []byte(`{"order_id":"order-1","customer_id":"customer-7","amount":4500}`)
	var wg sync.WaitGroup
	errs := make(chan error, rabbitPublishers)
	for g := range rabbitPublishers {
		wg.Go(func() {
			batch := make([]*message.Message, 0, rabbitBatch)
			for i := g; i < n; i += rabbitPublishers {
				m := message.NewMessage(watermill.NewUUID(), payload)
				m.Metadata.Set("position", strconv.Itoa(i+1))
				batch = append(batch, m)
				if len(batch) == rabbitBatch || i+rabbitPublishers >= n {
					if err := p.Publish(topic, batch...); err != nil {
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

func benchRabbitWatermillPublish(b *testing.B, url string, tx bool) {
	topic, queues, _ := rabbitNames(b, url)
	sub := watermillAMQPSubscriber(b, url)
	if err := sub.SubscribeInitialize(topic); err != nil { // the queue, so messages are stored
		b.Fatal(err)
	}
	*queues = append(*queues, wmamqp.GenerateQueueNameTopicNameWithSuffix("sink")(topic))
	p := watermillAMQPPublisher(b, url, tx)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	publishWatermillAMQP(b, p, topic, b.N)
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
}

// benchRabbitWatermillEndToEnd runs a subscriber that acks each message
// after handling it. With prefill, the queue is filled before the timer
// starts (consume-only).
func benchRabbitWatermillEndToEnd(b *testing.B, url string, prefill bool) {
	topic, queues, _ := rabbitNames(b, url)
	queue := wmamqp.GenerateQueueNameTopicNameWithSuffix("sink")(topic)
	*queues = append(*queues, queue)
	sub := watermillAMQPSubscriber(b, url)
	if err := sub.SubscribeInitialize(topic); err != nil {
		b.Fatal(err)
	}
	p := watermillAMQPPublisher(b, url, false)
	if prefill {
		publishWatermillAMQP(b, p, topic, b.N)
		waitQueueReady(b, url, queue, b.N)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	msgs, err := sub.Subscribe(ctx, topic)
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
	if !prefill {
		publishWatermillAMQP(b, p, topic, b.N)
	}
	select {
	case <-done:
	case <-time.After(deliveryTimeout):
		b.Fatal("watermill-amqp: deliveries missing")
	}
	// Acks are fire-and-forget frames in AMQP 0-9-1, on both sides: the
	// timer stops when every message was acked by its handler, as ours
	// stops at Stats().Handled.
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
}

// waitQueueReady waits until queue holds n ready messages (watermill's
// publisher returns before the broker has them).
func waitQueueReady(b *testing.B, url, queue string, n int) {
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(deliveryTimeout)
	for {
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		_ = ch.Close()
		if err == nil && q.Messages >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("queue %s: %d ready of %d, %v", queue, q.Messages, n, err)
		}
		time.Sleep(time.Millisecond) // polling interval, bounded by the deadline
	}
}

func benchRabbitRawConfirms(b *testing.B, url string) {
	exchange, queues, raw := rabbitNames(b, url)
	if err := raw.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	bindSinkQueue(b, raw, exchange, exchange+".sink", "#", queues)
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	env := orderEnvelope("order-1")
	data, err := eventsource.NewJSONCodec(nil).Marshal(env)
	if err != nil {
		b.Fatal(err)
	}
	msg := amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: env.ID.String(), Body: data}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	var wg sync.WaitGroup
	for g := range rabbitPublishers {
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			dcs := make([]*amqp.DeferredConfirmation, 0, rabbitBatch)
			for done := g * rabbitBatch; done < b.N; done += rabbitPublishers * rabbitBatch {
				dcs = dcs[:0]
				for range min(rabbitBatch, b.N-done) {
					dc, err := ch.PublishWithDeferredConfirmWithContext(benchCtx, exchange, "Order.OrderPlaced", true, false, msg)
					if err != nil {
						b.Error(err)
						return
					}
					dcs = append(dcs, dc)
				}
				for _, dc := range dcs {
					if !dc.Wait() {
						b.Error("nacked")
						return
					}
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
}
