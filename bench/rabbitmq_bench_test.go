package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/pkg/amqp"
	wmamqp3 "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource"
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
//   - */watermill-amqp-confirmed: watermill-amqp v3.0.2 with
//     ConfirmDelivery (each message waits for its publisher confirm) on a
//     pool of rabbitPublishers channels: watermill with the promise ours
//     makes, publisher confirms on both sides.
//   - PublishOnly/amqp091-confirms-headers: the raw case with the
//     properties and headers our bus puts on each message (the envelope
//     still pre-encoded): what our wire format costs on top of the raw
//     client, separate from what our code does.
//
// Set EVENTSOURCE_AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/) to
// run it.
func BenchmarkRabbitMQ(b *testing.B) {
	url := testenv.URL(b, "EVENTSOURCE_AMQP_URL", "start RabbitMQ and set EVENTSOURCE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ to run the RabbitMQ benchmarks")
	b.Run("EndToEnd/ours", func(b *testing.B) { benchRabbitOursEndToEnd(b, url) })
	b.Run("EndToEnd/watermill-amqp", func(b *testing.B) { benchRabbitWatermillEndToEnd(b, url, false) })
	b.Run("EndToEnd/watermill-amqp-confirmed", func(b *testing.B) { benchRabbitWatermill3EndToEnd(b, url) })
	b.Run("PublishOnly/ours", func(b *testing.B) { benchRabbitOursPublish(b, url) })
	b.Run("PublishOnly/watermill-amqp", func(b *testing.B) { benchRabbitWatermillPublish(b, url, false) })
	b.Run("PublishOnly/watermill-amqp-tx", func(b *testing.B) { benchRabbitWatermillPublish(b, url, true) })
	b.Run("PublishOnly/watermill-amqp-confirmed", func(b *testing.B) { benchRabbitWatermill3Publish(b, url) })
	b.Run("PublishOnly/amqp091-confirms", func(b *testing.B) { benchRabbitRawConfirms(b, url, false) })
	b.Run("PublishOnly/amqp091-confirms-headers", func(b *testing.B) { benchRabbitRawConfirms(b, url, true) })
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
	closeAtEnd(b, rb)
	return rb
}

// rabbitLoad is how every RabbitMQ case publishes, like redisLoad:
// rabbitPublishers goroutines, each owning whole aggregates, in batches of
// rabbitBatch.
var rabbitLoad = brokerLoad{publishers: rabbitPublishers, batch: rabbitBatch, aggregates: rabbitAggregates}

// rabbitHandled waits until rb has handled (and acked) n events.
func rabbitHandled(rb *rabbitbus.Bus) func(b *testing.B, n int) {
	return func(b *testing.B, n int) { waitHandled(b, rb, n) }
}

func benchRabbitOursEndToEnd(b *testing.B, url string) {
	exchange, queues, _ := rabbitNames(b, url)
	rb := openRabbitBus(b, rabbitConfig(url, exchange), queues)
	benchOursEndToEnd(b, rabbitLoad, rb, false, rabbitHandled(rb))
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
	benchOursPublish(b, rabbitLoad, rb)
}

func benchRabbitOursConsume(b *testing.B, url string) {
	exchange, queues, raw := rabbitNames(b, url)
	cfg := rabbitConfig(url, exchange)
	pub := openRabbitBus(b, cfg, queues)
	// The group's queue with the binding Subscribe makes, filled before.
	bindSinkQueue(b, raw, exchange, cfg.WithDefaults().Names().Queue, "*.OrderPlaced", queues)
	rabbitLoad.publish(b, pub, b.N)
	rb := openRabbitBus(b, cfg, queues)
	benchOursConsume(b, rabbitLoad, rb, rabbitHandled(rb))
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

func benchRabbitWatermillPublish(b *testing.B, url string, tx bool) {
	topic, queues, _ := rabbitNames(b, url)
	sub := watermillAMQPSubscriber(b, url)
	if err := sub.SubscribeInitialize(topic); err != nil { // the queue, so messages are stored
		b.Fatal(err)
	}
	*queues = append(*queues, wmamqp.GenerateQueueNameTopicNameWithSuffix("sink")(topic))
	p := watermillAMQPPublisher(b, url, tx)
	benchWatermillPublish(b, rabbitLoad, wmPeer{pub: p, topic: topic})
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
		rabbitLoad.publishWatermill(b, p, topic, b.N)
		waitQueueReady(b, url, queue, b.N)
	}
	// Acks are fire-and-forget frames in AMQP 0-9-1, on both sides: the
	// timer stops when every message was acked by its handler, as ours
	// stops at Stats().Handled.
	benchWatermillDeliver(b, rabbitLoad, wmPeer{name: "watermill-amqp", pub: p, sub: sub, topic: topic}, prefill, nil)
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

// ---- watermill-amqp v3, publisher confirms ----------------------------

// watermill3Config is watermillAMQPConfig on watermill-amqp v3, with
// ConfirmDelivery on a pool of one channel per publishing goroutine.
func watermill3Config(url string) wmamqp3.Config {
	cfg := wmamqp3.NewDurablePubSubConfig(url, wmamqp3.GenerateQueueNameTopicNameWithSuffix("sink"))
	cfg.Consume.Qos.PrefetchCount = 1024
	cfg.Publish.ConfirmDelivery = true
	cfg.Publish.ChannelPoolSize = rabbitPublishers
	return cfg
}

// watermill3PubSub opens a confirmed publisher and a subscriber whose
// queue exists (bound to topic), closed when b ends.
func watermill3PubSub(b *testing.B, url, topic string) (message.Publisher, message.Subscriber) {
	s, err := wmamqp3.NewSubscriber(watermill3Config(url), watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	if err := s.SubscribeInitialize(topic); err != nil {
		b.Fatal(err)
	}
	p, err := wmamqp3.NewPublisher(watermill3Config(url), watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	return p, s
}

func benchRabbitWatermill3Publish(b *testing.B, url string) {
	topic, queues, _ := rabbitNames(b, url)
	*queues = append(*queues, wmamqp3.GenerateQueueNameTopicNameWithSuffix("sink")(topic))
	p, _ := watermill3PubSub(b, url, topic)
	benchWatermillPublish(b, rabbitLoad, wmPeer{pub: p, topic: topic})
}

func benchRabbitWatermill3EndToEnd(b *testing.B, url string) {
	topic, queues, _ := rabbitNames(b, url)
	*queues = append(*queues, wmamqp3.GenerateQueueNameTopicNameWithSuffix("sink")(topic))
	p, s := watermill3PubSub(b, url, topic)
	benchWatermillDeliver(b, rabbitLoad, wmPeer{name: "watermill-amqp-confirmed", pub: p, sub: s, topic: topic}, false, nil)
}

// ---- raw amqp091-go -------------------------------------------------------

// benchRabbitRawConfirms publishes one pre-encoded envelope with raw
// amqp091-go and publisher confirms; withHeaders adds the properties and
// headers our bus sets (bus/rabbitmq's prepare).
func benchRabbitRawConfirms(b *testing.B, url string, withHeaders bool) {
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
	if withHeaders {
		msg.Timestamp, msg.Type = env.OccurredAt, env.Type
		msg.Headers = amqp.Table{
			"es-event-id": env.ID.String(), "es-event-type": env.Type, "es-aggregate-type": env.AggregateType,
			"es-aggregate-id": env.AggregateID, "es-aggregate-version": env.Version,
		}
	}
	timed(b, func() {
		rabbitLoad.rawBatches(b, b.N, func(int) func(k int) error {
			ch, err := conn.Channel()
			if err != nil {
				b.Fatal(err)
			}
			if err := ch.Confirm(false); err != nil {
				b.Fatal(err)
			}
			dcs := make([]*amqp.DeferredConfirmation, 0, rabbitBatch)
			return func(k int) error {
				dcs = dcs[:0]
				for range k {
					dc, err := ch.PublishWithDeferredConfirmWithContext(benchCtx, exchange, "Order.OrderPlaced", true, false, msg)
					if err != nil {
						return err
					}
					dcs = append(dcs, dc)
				}
				for _, dc := range dcs {
					if !dc.Wait() {
						return errors.New("nacked")
					}
				}
				return nil
			}
		})
	})
}
