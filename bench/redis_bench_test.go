package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmredis "github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
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
//   - PublishOnly/go-redis-pipelined-xadd-encode: the same, each event
//     encoded with eventsource.JSONCodec as it is sent (the events ours
//     publishes: one per aggregate and version): what a user of the raw
//     client pays to put our envelopes on the stream, so that ours ÷ this
//     is what the bus adds, and this ÷ the pre-encoded case the encoding.
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
	b.Run("PublishOnly/go-redis-pipelined-xadd-encode", func(b *testing.B) { benchRedisRawXAddEncode(b, url) })
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
		if _, err := redisbus.DeleteKeys(ctx, raw, prefix); err != nil {
			b.Errorf("deleting keys of %s: %v", prefix, err)
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
	closeAtEnd(b, rb)
	return rb
}

// redisLoad is how every Redis case publishes.
var redisLoad = brokerLoad{publishers: redisPublishers, batch: redisBatch, aggregates: redisAggregates}

// redisHandled waits until rb has acknowledged (XACK) n events.
func redisHandled(rb *redisbus.Bus) func(b *testing.B, n int) {
	return func(b *testing.B, n int) { waitHandled(b, rb, n) }
}

func benchRedisOursEndToEnd(b *testing.B, url string) {
	prefix, _ := redisPrefix(b, url)
	rb := openRedisBus(b, url, prefix)
	benchOursEndToEnd(b, redisLoad, rb, false, redisHandled(rb))
}

func benchRedisOursPublish(b *testing.B, url string) {
	prefix, _ := redisPrefix(b, url)
	benchOursPublish(b, redisLoad, openRedisBus(b, url, prefix))
}

func benchRedisOursConsume(b *testing.B, url string) {
	prefix, _ := redisPrefix(b, url)
	redisLoad.publish(b, openRedisBus(b, url, prefix), b.N)
	rb := openRedisBus(b, url, prefix)
	benchOursConsume(b, redisLoad, rb, redisHandled(rb))
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
	timed(b, func() {
		// Publisher g appends every redisPublishers-th batch.
		redisLoad.rawBatches(b, b.N, func(int) func(k int) error {
			return func(k int) error {
				_, err := raw.Pipelined(benchCtx, func(p goredis.Pipeliner) error {
					for range k {
						p.XAdd(benchCtx, &args)
					}
					return nil
				})
				return err
			}
		})
	})
}

func benchRedisRawXAddEncode(b *testing.B, url string) {
	prefix, raw := redisPrefix(b, url)
	stream := "{" + prefix + "}:events"
	codec := eventsource.NewJSONCodec(nil)
	ids := aggregateIDs(redisLoad.aggregates)
	base := orderEnvelope(ids[0])
	timed(b, func() {
		redisLoad.rawBatches(b, b.N, func(g int) func(k int) error {
			next := g * redisLoad.batch // the index of the goroutine's next event
			return func(k int) error {
				_, err := raw.Pipelined(benchCtx, func(p goredis.Pipeliner) error {
					for i := next; i < next+k; i++ {
						env := base
						env.AggregateID = ids[i%redisLoad.aggregates]
						env.Version = int64(i/redisLoad.aggregates + 1)
						env.Position = int64(i + 1)
						data, err := codec.Marshal(env)
						if err != nil {
							return err
						}
						p.XAdd(benchCtx, &goredis.XAddArgs{Stream: stream, ID: "*", Values: []any{
							"id", env.ID.String(), "type", env.Type, "agg_type", env.AggregateType,
							"agg_id", env.AggregateID, "version", strconv.FormatInt(env.Version, 10), "envelope", data,
						}})
					}
					return nil
				})
				next += redisLoad.publishers * redisLoad.batch
				return err
			}
		})
	})
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

func benchRedisWatermillPublish(b *testing.B, url string) {
	prefix, _ := redisPrefix(b, url)
	benchWatermillPublish(b, redisLoad, wmPeer{pub: watermillPublisher(b, url), topic: prefix})
}

// benchRedisWatermillEndToEnd runs a consumer-group subscriber that acks
// each message after handling it. With prefill, the stream is filled
// before the timer starts (consume-only).
func benchRedisWatermillEndToEnd(b *testing.B, url string, prefill bool) {
	prefix, raw := redisPrefix(b, url)
	p := watermillPublisher(b, url)
	if prefill {
		redisLoad.publishWatermill(b, p, prefix, b.N)
	}
	sub, err := wmredis.NewSubscriber(wmredis.SubscriberConfig{
		Client: watermillClient(b, url), ConsumerGroup: "bench", Consumer: "c1", OldestId: "0",
	}, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Close() })
	w := wmPeer{name: "watermill-redisstream", pub: p, sub: sub, topic: prefix}
	benchWatermillDeliver(b, redisLoad, w, prefill, func(b *testing.B, _ int) {
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
	})
}
