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
	wmredis "github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

// redisBatch is how many events one Publish call carries (ours: one
// pipeline; watermill-redisstream: one XADD round trip per message, which
// is how its Publisher works; raw go-redis: one pipeline).
const redisBatch = 100

// redisAggregates is how many aggregates the events are spread over.
const redisAggregates = 64

// redisPublishers is how many goroutines publish at once (ours and
// watermill alike).
const redisPublishers = 4

// BenchmarkRedisStreams compares our Redis Streams bus with
// watermill-redisstream on the same Redis, one process, small events. One
// op is one event.
//
//   - EndToEnd: b.N events published, handled by one subscriber (one
//     consumer group) and acknowledged (XACK) before the timer stops.
//     Ours must deliver every aggregate's versions in order.
//   - PublishOnly: b.N events appended, nobody reading.
//   - ConsumeOnly: b.N events already in the stream (untimed); the timer
//     runs from subscribing to the last acknowledgement.
//   - PublishOnly/go-redis-pipelined-xadd: raw go-redis XADD of our field
//     layout with pre-encoded envelopes, 100 per pipeline: the ceiling a
//     publisher on this Redis can reach.
//
// Every publishing case runs redisPublishers goroutines at once.
//
// Set EVENTSOURCE_REDIS_URL (e.g. redis://127.0.0.1:6379/0) to run it.
func BenchmarkRedisStreams(b *testing.B) {
	url := testenv.URL(b, "EVENTSOURCE_REDIS_URL", "start Redis and set EVENTSOURCE_REDIS_URL=redis://127.0.0.1:6379/0 to run the Redis benchmarks")
	b.Run("EndToEnd/ours", func(b *testing.B) { benchRedisOursEndToEnd(b, url) })
	b.Run("EndToEnd/watermill-redisstream", func(b *testing.B) { benchRedisWatermillEndToEnd(b, url, false) })
	b.Run("PublishOnly/ours", func(b *testing.B) { benchRedisOursPublish(b, url) })
	b.Run("PublishOnly/watermill-redisstream", func(b *testing.B) { benchRedisWatermillPublish(b, url) })
	b.Run("PublishOnly/go-redis-pipelined-xadd", func(b *testing.B) { benchRedisRawXAdd(b, url) })
	b.Run("ConsumeOnly/ours", func(b *testing.B) { benchRedisOursConsume(b, url) })
	b.Run("ConsumeOnly/watermill-redisstream", func(b *testing.B) { benchRedisWatermillEndToEnd(b, url, true) })
}

var redisBenchSeq atomic.Int64

// redisPrefix returns a fresh stream prefix and deletes its keys when b
// ends.
func redisPrefix(b *testing.B, url string) (prefix string, raw *goredis.Client) {
	b.Helper()
	opts, err := goredis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	raw = goredis.NewClient(opts)
	prefix = fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), redisBenchSeq.Add(1))
	b.Cleanup(func() {
		ctx := context.Background()
		iter := raw.Scan(ctx, 0, redisbus.KeyPattern(prefix), 100).Iterator()
		for iter.Next(ctx) {
			raw.Del(ctx, iter.Val())
		}
		raw.Del(ctx, prefix) // watermill's stream
		_ = raw.Close()
	})
	return prefix, raw
}

func openRedisBus(b *testing.B, url, prefix string) *redisbus.Bus {
	b.Helper()
	r := eventsource.NewRegistry()
	eventsource.MustRegister[OrderPlaced](r)
	rb, err := redisbus.New(context.Background(), redisbus.Config{
		URL: url, Registry: r, StreamPrefix: prefix, Group: "bench", Logger: quietLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rb.Close(ctx); err != nil {
			b.Error(err)
		}
	})
	return rb
}

// publishRedis publishes n events, positions 1..n, in batches, from
// redisPublishers goroutines at once, as a service publishes from its
// concurrent requests. Publisher g publishes the events i with i%P == g
// in order, which keeps each aggregate's versions in order (an aggregate
// belongs to one publisher, since the aggregate count is a multiple of P).
func publishRedis(b *testing.B, rb *redisbus.Bus, n int) {
	ids := aggregateIDs(redisAggregates)
	base := orderEnvelope(ids[0])
	var wg sync.WaitGroup
	errs := make(chan error, redisPublishers)
	for g := range redisPublishers {
		wg.Go(func() {
			batch := make([]eventsource.Envelope, 0, redisBatch)
			for i := g; i < n; i += redisPublishers {
				env := base
				env.AggregateID = ids[i%redisAggregates]
				env.Version = int64(i/redisAggregates + 1)
				env.Position = int64(i + 1)
				batch = append(batch, env)
				if len(batch) == redisBatch || i+redisPublishers >= n {
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

// subscribeSink subscribes one in-order sink and returns it, expecting n.
func subscribeSink(b *testing.B, rb *redisbus.Bus, n int) *sinks {
	s := newSinks(1, redisAggregates)
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

// waitAcked waits until the bus has acknowledged n events.
func waitAcked(b *testing.B, rb *redisbus.Bus, n int) {
	deadline := time.Now().Add(deliveryTimeout)
	for rb.Stats().Handled < uint64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("acked %d of %d", rb.Stats().Handled, n)
		}
		time.Sleep(100 * time.Microsecond) // polling interval, bounded by the deadline
	}
}

func checkOrder(b *testing.B, s *sinks) {
	if n := s.outOfOrder(); n != 0 {
		b.Fatalf("%d deliveries out of order", n)
	}
}

func benchRedisOursEndToEnd(b *testing.B, url string) {
	prefix, _ := redisPrefix(b, url)
	rb := openRedisBus(b, url, prefix)
	s := subscribeSink(b, rb, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	publishRedis(b, rb, b.N)
	s.wait(b, deliveryTimeout)
	waitAcked(b, rb, b.N)
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
	checkOrder(b, s)
}

func benchRedisOursPublish(b *testing.B, url string) {
	prefix, _ := redisPrefix(b, url)
	rb := openRedisBus(b, url, prefix)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	publishRedis(b, rb, b.N)
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
}

func benchRedisOursConsume(b *testing.B, url string) {
	prefix, _ := redisPrefix(b, url)
	pub := openRedisBus(b, url, prefix)
	publishRedis(b, pub, b.N)
	rb := openRedisBus(b, url, prefix)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	s := subscribeSink(b, rb, b.N)
	s.wait(b, deliveryTimeout)
	waitAcked(b, rb, b.N)
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
	checkOrder(b, s)
}

func benchRedisRawXAdd(b *testing.B, url string) {
	prefix, raw := redisPrefix(b, url)
	stream := "{" + prefix + "}:events"
	env := orderEnvelope("order-1")
	data, err := eventsource.NewJSONCodec(nil).Marshal(env)
	if err != nil {
		b.Fatal(err)
	}
	args := goredis.XAddArgs{Stream: stream, ID: "*", Values: []any{
		"id", env.ID.String(), "type", env.Type, "agg_type", env.AggregateType,
		"agg_id", env.AggregateID, "version", "1", "envelope", data,
	}}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	var wg sync.WaitGroup
	for g := range redisPublishers {
		wg.Go(func() {
			// Publisher g appends every redisPublishers-th batch.
			for done := g * redisBatch; done < b.N; done += redisPublishers * redisBatch {
				k := min(redisBatch, b.N-done)
				if _, err := raw.Pipelined(benchCtx, func(p goredis.Pipeliner) error {
					for range k {
						p.XAdd(benchCtx, &args)
					}
					return nil
				}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
}

// ---- watermill-redisstream --------------------------------------------

// watermillClient is a client of watermill's own: closing its publisher or
// subscriber closes the client, and the cleanup still needs raw.
func watermillClient(b *testing.B, url string) *goredis.Client {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	c := goredis.NewClient(opts)
	b.Cleanup(func() { _ = c.Close() })
	return c
}

func watermillPublisher(b *testing.B, url string) *wmredis.Publisher {
	p, err := wmredis.NewPublisher(wmredis.PublisherConfig{Client: watermillClient(b, url)}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// publishWatermill publishes n messages from redisPublishers goroutines,
// in batches of redisBatch, each carrying the same JSON payload our events
// carry.
func publishWatermill(b *testing.B, p *wmredis.Publisher, topic string, n int) {
	payload := []byte(`{"order_id":"order-1","customer_id":"customer-7","amount":4500}`)
	var wg sync.WaitGroup
	errs := make(chan error, redisPublishers)
	for g := range redisPublishers {
		wg.Go(func() {
			batch := make([]*message.Message, 0, redisBatch)
			for i := g; i < n; i += redisPublishers {
				m := message.NewMessage(watermill.NewUUID(), payload)
				m.Metadata.Set("position", strconv.Itoa(i+1))
				batch = append(batch, m)
				if len(batch) == redisBatch || i+redisPublishers >= n {
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

func benchRedisWatermillPublish(b *testing.B, url string) {
	prefix, _ := redisPrefix(b, url)
	p := watermillPublisher(b, url)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	publishWatermill(b, p, prefix, b.N)
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
}

// benchRedisWatermillEndToEnd runs a consumer-group subscriber that acks
// each message after handling it. With prefill, the stream is filled
// before the timer starts (consume-only).
func benchRedisWatermillEndToEnd(b *testing.B, url string, prefill bool) {
	prefix, raw := redisPrefix(b, url)
	p := watermillPublisher(b, url)
	if prefill {
		publishWatermill(b, p, prefix, b.N)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := wmredis.NewSubscriber(wmredis.SubscriberConfig{
		Client: watermillClient(b, url), ConsumerGroup: "bench", Consumer: "c1", OldestId: "0",
	}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cancel()
		_ = sub.Close()
	})
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	msgs, err := sub.Subscribe(ctx, prefix)
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
		publishWatermill(b, p, prefix, b.N)
	}
	select {
	case <-done:
	case <-time.After(deliveryTimeout):
		b.Fatal("watermill-redisstream: deliveries missing")
	}
	// Ack returns before XACK is sent; wait until Redis has every ack.
	deadline := time.Now().Add(deliveryTimeout)
	for {
		pend, err := raw.XPending(benchCtx, prefix, "bench").Result()
		if err == nil && pend.Count == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("watermill-redisstream: acks missing: %+v %v", pend, err)
		}
		time.Sleep(100 * time.Microsecond) // polling interval, bounded by the deadline
	}
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, 1)
}
