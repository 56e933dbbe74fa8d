package bench

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
	kafkabus "github.com/eventsource-go/eventsource/bus/kafka"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

// kafkaBatch is how many events one Publish call carries (ours: one
// Writer call, one produce request per partition; watermill-kafka: one
// synchronous SendMessage round trip per message, which is how its
// Publisher works).
const kafkaBatch = 1000

// kafkaPartitions of the events topic, for both libraries.
const kafkaPartitions = 6

// kafkaCommitInterval is how often both libraries commit consumed offsets.
const kafkaCommitInterval = 100 * time.Millisecond

// BenchmarkKafka compares our Kafka bus with watermill-kafka (Sarama) on
// the same broker, one process, small events. One op is one event.
//
//   - EndToEnd: b.N events published, handled by one subscriber (one
//     consumer group) and their offsets committed before the timer stops.
//     Ours must deliver every aggregate's versions in order.
//   - PublishOnly: b.N events written, nobody reading.
//   - ConsumeOnly: b.N events already in the topic (untimed); the timer
//     runs from subscribing to the last commit.
//
// Every publishing case runs redisPublishers goroutines at once.
//
// Set EVENTSOURCE_KAFKA_BROKERS (e.g. 127.0.0.1:9092, where CI runs
// integration/cmd/kfake) to run it.
func BenchmarkKafka(b *testing.B) {
	brokers := strings.Split(testenv.URL(b, "EVENTSOURCE_KAFKA_BROKERS",
		"start a Kafka-protocol broker (integration/cmd/kfake) and set EVENTSOURCE_KAFKA_BROKERS=127.0.0.1:9092 to run the Kafka benchmarks"), ",")
	b.Run("EndToEnd/ours", func(b *testing.B) { benchKafkaOursEndToEnd(b, brokers, false) })
	b.Run("EndToEnd/watermill-kafka", func(b *testing.B) { benchKafkaWatermillEndToEnd(b, brokers, false) })
	b.Run("PublishOnly/ours", func(b *testing.B) { benchKafkaOursPublish(b, brokers) })
	b.Run("PublishOnly/watermill-kafka", func(b *testing.B) { benchKafkaWatermillPublish(b, brokers) })
	b.Run("ConsumeOnly/ours", func(b *testing.B) { benchKafkaOursEndToEnd(b, brokers, true) })
	b.Run("ConsumeOnly/watermill-kafka", func(b *testing.B) { benchKafkaWatermillEndToEnd(b, brokers, true) })
}

var kafkaBenchSeq atomic.Int64

// kafkaTopic creates a fresh topic and deletes it, with our group's retry
// and dead-letter topics, when b ends.
func kafkaTopic(b *testing.B, brokers []string) string {
	b.Helper()
	topic := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), kafkaBenchSeq.Add(1))
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: tr}
	resp, err := c.CreateTopics(benchCtx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{
		{Topic: topic, NumPartitions: kafkaPartitions, ReplicationFactor: 1},
	}})
	if err != nil || resp.Errors[topic] != nil {
		b.Fatalf("create topic: %v %v", err, resp)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cfg := kafkabus.Config{Brokers: brokers, Topic: topic, Group: "bench"}
		if err := kafkabus.DeleteTopics(ctx, cfg, cfg.Topics()...); err != nil {
			b.Error(err)
		}
	})
	return topic
}

// waitCommitted waits until the group's committed offsets on topic add up
// to n: every event handled and committed.
func waitCommitted(b *testing.B, brokers []string, topic, group string, n int) {
	b.Helper()
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: tr}
	parts := make([]int, kafkaPartitions)
	for i := range parts {
		parts[i] = i
	}
	deadline := time.Now().Add(deliveryTimeout)
	for {
		resp, err := c.OffsetFetch(benchCtx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
		var sum int64
		if err == nil {
			for _, p := range resp.Topics[topic] {
				sum += max(p.CommittedOffset, 0)
			}
		}
		if sum >= int64(n) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("committed %d of %d (%v)", sum, n, err)
		}
		time.Sleep(time.Millisecond) // polling interval, bounded by the deadline
	}
}

func openKafkaBus(b *testing.B, brokers []string, topic string) *kafkabus.Bus {
	b.Helper()
	r := eventsource.NewRegistry()
	eventsource.MustRegister[OrderPlaced](r)
	kb, err := kafkabus.New(benchCtx, kafkabus.Config{
		Brokers: brokers, Registry: r, Topic: topic, Group: "bench", CreateTopics: true, Partitions: kafkaPartitions,
		CommitInterval: kafkaCommitInterval, Logger: quietLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	closeAtEnd(b, kb)
	return kb
}

// kafkaLoad is how every Kafka case publishes: redisPublishers
// goroutines at once, each owning whole aggregates of redisAggregates, in
// batches of kafkaBatch.
var kafkaLoad = brokerLoad{publishers: redisPublishers, batch: kafkaBatch, aggregates: redisAggregates}

// kafkaCommitted waits until group "bench" has committed n events of topic.
func kafkaCommitted(brokers []string, topic string) func(b *testing.B, n int) {
	return func(b *testing.B, n int) { waitCommitted(b, brokers, topic, "bench", n) }
}

// benchKafkaOursEndToEnd: publish, handle, commit; with prefill, the
// events are written before the timer starts (consume-only).
func benchKafkaOursEndToEnd(b *testing.B, brokers []string, prefill bool) {
	topic := kafkaTopic(b, brokers)
	if prefill {
		kafkaLoad.publish(b, openKafkaBus(b, brokers, topic), b.N)
	}
	kb := openKafkaBus(b, brokers, topic)
	if prefill {
		benchOursConsume(b, kafkaLoad, kb, kafkaCommitted(brokers, topic))
	} else {
		benchOursEndToEnd(b, kafkaLoad, kb, true, kafkaCommitted(brokers, topic))
	}
}

func benchKafkaOursPublish(b *testing.B, brokers []string) {
	topic := kafkaTopic(b, brokers)
	benchOursPublish(b, kafkaLoad, openKafkaBus(b, brokers, topic))
}

// ---- watermill-kafka --------------------------------------------------

func watermillKafkaPublisher(b *testing.B, brokers []string) *wmkafka.Publisher {
	p, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{Brokers: brokers, Marshaler: wmkafka.DefaultMarshaler{}}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	return p
}

func benchKafkaWatermillPublish(b *testing.B, brokers []string) {
	topic := kafkaTopic(b, brokers)
	benchWatermillPublish(b, kafkaLoad, wmPeer{pub: watermillKafkaPublisher(b, brokers), topic: topic})
}

// benchKafkaWatermillEndToEnd runs a consumer-group subscriber that acks
// each message after handling it (watermill marks it; Sarama commits the
// marks every kafkaCommitInterval). With prefill, the topic is filled
// before the timer starts (consume-only).
func benchKafkaWatermillEndToEnd(b *testing.B, brokers []string, prefill bool) {
	topic := kafkaTopic(b, brokers)
	p := watermillKafkaPublisher(b, brokers)
	if prefill {
		kafkaLoad.publishWatermill(b, p, topic, b.N)
	}
	cfg := wmkafka.DefaultSaramaSubscriberConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest // as ours: a new group reads from the start
	cfg.Consumer.Offsets.AutoCommit.Interval = kafkaCommitInterval
	sub, err := wmkafka.NewSubscriber(wmkafka.SubscriberConfig{
		Brokers: brokers, Unmarshaler: wmkafka.DefaultMarshaler{}, ConsumerGroup: "bench", OverwriteSaramaConfig: cfg,
	}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Close() })
	w := wmPeer{name: "watermill-kafka", pub: p, sub: sub, topic: topic}
	benchWatermillDeliver(b, kafkaLoad, w, prefill, kafkaCommitted(brokers, topic))
}
