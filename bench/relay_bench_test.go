package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/repository"
)

// relayBroker is a broker the relay benchmarks publish to: open returns a
// bus on a fresh stream, exchange or topic (cleaned up when b ends), ready
// for publish-only (on RabbitMQ, with a bound queue so that messages are
// routed and stored).
type relayBroker struct {
	name string
	load brokerLoad // how its own PublishOnly case publishes
	open func(b *testing.B) bus.Bus
}

func relayBrokers(b *testing.B) []relayBroker {
	redisURL := testenv.URL(b, "EVENTSOURCE_REDIS_URL", "set EVENTSOURCE_REDIS_URL=redis://127.0.0.1:6379/0 to run the relay benchmarks")
	amqpURL := testenv.URL(b, "EVENTSOURCE_AMQP_URL", "set EVENTSOURCE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ to run the relay benchmarks")
	brokers := strings.Split(testenv.URL(b, "EVENTSOURCE_KAFKA_BROKERS", "set EVENTSOURCE_KAFKA_BROKERS=127.0.0.1:9092 to run the relay benchmarks"), ",")
	return []relayBroker{
		{"redis", redisLoad, func(b *testing.B) bus.Bus {
			prefix, _ := redisPrefix(b, redisURL)
			return openRedisBus(b, redisURL, prefix)
		}},
		{"rabbitmq", rabbitLoad, func(b *testing.B) bus.Bus {
			exchange, queues, raw := rabbitNames(b, amqpURL)
			rb := openRabbitBus(b, rabbitConfig(amqpURL, exchange), queues)
			bindSinkQueue(b, raw, exchange, exchange+".sink", "#", queues)
			return rb
		}},
		{"kafka", kafkaLoad, func(b *testing.B) bus.Bus { return openKafkaBus(b, brokers, kafkaTopic(b, brokers)) }},
	}
}

// relayStores are the stores the relay reads from, each fresh per case.
var relayStores = []struct {
	name string
	open func(b *testing.B) relayStore
}{
	{"sqlite", func(b *testing.B) relayStore { return openSQLiteBench(b) }},
	{"postgres", func(b *testing.B) relayStore { return openPostgresBench(b) }},
}

type relayStore interface {
	eventstore.Store
	eventstore.CheckpointStore
}

// relayBaseline holds each broker's PublishOnly events/s from this run,
// which the relay cases report themselves against.
var relayBaseline sync.Map // broker name → float64

// BenchmarkRelay measures the outbox relay: b.N events already stored
// (untimed), then the timer runs while Relay.PublishPending publishes them
// all, in batches of eventstore.DefaultBatchSize with the checkpoint saved
// after each, to a bus nobody reads. One op is one event.
//
//   - <broker>/PublishOnly: the bus's own publish-only figure, measured as
//     BenchmarkRedisStreams (and the others) measure it, in this run.
//   - <broker>/<store>: the relay from SQLite or PostgreSQL to that bus;
//     pct-of-publish is its events/s as a percentage of PublishOnly's.
//   - ReadOnly/<store>: an eventstore.Follower reading the same events
//     raw, as the relay on a broker bus does (Follower.Raw), in batches of
//     the same size and saving its checkpoint after each, with nothing
//     done per batch: the most a relay from that store can reach, in
//     this run. ReadOnlyDecoded/<store> reads them decoded, as a
//     projection does.
//
// Run it with a fixed count, e.g. -benchtime 50000x (filling the store is
// untimed but not free). Needs every broker and PostgreSQL.
func BenchmarkRelay(b *testing.B) {
	for _, read := range []struct {
		name string
		raw  bool
	}{{"ReadOnly", true}, {"ReadOnlyDecoded", false}} {
		for _, st := range relayStores {
			b.Run(read.name+"/"+st.name, func(b *testing.B) {
				store := st.open(b)
				fillStore(b, store, b.N)
				f := eventstore.Follower{Name: "bench", Store: store, Checkpoints: store, Raw: read.raw}
				timed(b, func() {
					n, err := f.CatchUpBatches(benchCtx, func(context.Context, []eventsource.Envelope) error { return nil })
					if err != nil || n != b.N {
						b.Fatalf("read %d of %d: %v", n, b.N, err)
					}
				})
			})
		}
	}
	for _, br := range relayBrokers(b) {
		b.Run(br.name+"/PublishOnly", func(b *testing.B) {
			bb := br.open(b)
			timed(b, func() { br.load.publish(b, bb, b.N) })
			relayBaseline.Store(br.name, float64(b.N)/b.Elapsed().Seconds())
		})
		for _, st := range relayStores {
			b.Run(br.name+"/"+st.name, func(b *testing.B) {
				store := st.open(b)
				fillStore(b, store, b.N)
				bb := br.open(b)
				r := repository.NewRelay("bench", store, store, bb, repository.WithRelayLogger(quietLogger()))
				timed(b, func() {
					n, err := r.PublishPending(benchCtx)
					if err != nil || n != b.N {
						b.Fatalf("relayed %d of %d: %v", n, b.N, err)
					}
				})
				reportOfBaseline(b, br.name)
			})
		}
	}
}

// reportOfBaseline reports b's events/s as a percentage of the broker's
// PublishOnly figure from this run.
func reportOfBaseline(b *testing.B, broker string) {
	base, ok := relayBaseline.Load(broker)
	if secs := b.Elapsed().Seconds(); ok && secs > 0 {
		b.ReportMetric(100*float64(b.N)/secs/base.(float64), "pct-of-publish")
	}
}

// fillStore appends n OrderPlaced events over the benchmark's aggregates,
// 100 per Append, untimed.
func fillStore(b *testing.B, store eventstore.Store, n int) {
	b.Helper()
	ids := aggregateIDs(redisAggregates)
	const chunk = 100
	batch := make([]eventsource.Envelope, 0, chunk)
	for done, k := 0, 0; done < n; k++ {
		id := ids[k%len(ids)]
		batch = batch[:0]
		for range min(chunk, n-done) {
			batch = append(batch, orderEnvelope(id))
		}
		if _, err := store.Append(benchCtx, eventsource.StreamID("Order", id), eventstore.AnyVersion, batch); err != nil {
			b.Fatal(fmt.Errorf("fill store: %w", err))
		}
		done += len(batch)
	}
}

// outboxSavers is how many goroutines call Save at once in the end-to-end
// outbox benchmark, as concurrent requests of a service would.
const outboxSavers = 4

// BenchmarkOutboxEndToEnd measures the path users care about in outbox
// mode: repository.Save (one event, a new aggregate) → the store → the
// relay, nudged by Save → the broker → a handler. outboxSavers goroutines
// save at once; the timer stops when every event was handled. One op is
// one event; events/s is the throughput, and p50-µs / p99-µs the latency
// from Save returning to the handler running.
func BenchmarkOutboxEndToEnd(b *testing.B) {
	for _, br := range relayBrokers(b) {
		for _, st := range relayStores {
			b.Run(br.name+"/"+st.name, func(b *testing.B) { benchOutboxEndToEnd(b, br, st.open(b)) })
		}
	}
}

func benchOutboxEndToEnd(b *testing.B, br relayBroker, store relayStore) {
	bb := br.open(b)
	n := b.N
	saved := make([]atomic.Int64, n+1) // index n: the warm-up event
	handled := make([]atomic.Int64, n+1)
	var count atomic.Int64
	if _, err := bus.On(bb, func(_ context.Context, _ OrderPlaced, env eventsource.Envelope) error {
		i, err := strconv.Atoi(env.AggregateID)
		if err == nil && i >= 0 && i <= n && handled[i].CompareAndSwap(0, time.Now().UnixNano()) {
			count.Add(1)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	if err := bb.Start(benchCtx); err != nil {
		b.Fatal(err)
	}
	relay := repository.NewRelay("bench", store, store, bb, repository.WithRelayLogger(quietLogger()))
	ctx, cancel := context.WithCancel(benchCtx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx, time.Second) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	repo := repository.New(store, nil, newBenchOrder, repository.WithOutbox(relay))
	save := func(i int) error {
		o := newBenchOrder()
		o.SetID(strconv.Itoa(i))
		aggregate.Raise(o, OrderPlaced{OrderID: o.ID(), CustomerID: "customer-7", Amount: 4500})
		if err := repo.Save(benchCtx, o); err != nil {
			return err
		}
		saved[i].Store(time.Now().UnixNano())
		return nil
	}
	// Warm up: the consumer has joined and the relay is live.
	if err := save(n); err != nil {
		b.Fatal(err)
	}
	waitCount(b, &count, 1)

	timed(b, func() {
		var wg sync.WaitGroup
		for g := range outboxSavers {
			wg.Go(func() {
				for i := g; i < n; i += outboxSavers {
					if err := save(i); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		waitCount(b, &count, int64(n+1))
	})
	lat := make([]time.Duration, n)
	for i := range n {
		lat[i] = max(time.Duration(handled[i].Load()-saved[i].Load()), 0)
	}
	slices.Sort(lat)
	at := func(q float64) float64 { return float64(lat[min(int(q*float64(n)), n-1)].Microseconds()) }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

func waitCount(b *testing.B, count *atomic.Int64, n int64) {
	deadline := time.Now().Add(deliveryTimeout)
	for count.Load() < n {
		if time.Now().After(deadline) {
			b.Fatalf("handled %d of %d", count.Load(), n)
		}
		time.Sleep(100 * time.Microsecond) // polling interval, bounded by the deadline
	}
}
