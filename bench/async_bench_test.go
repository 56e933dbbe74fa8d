package bench

import (
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/eventsource-go/eventsource/bus"
)

// asyncBuffer is the queue of each asynchronous subscriber of ours.
const asyncBuffer = 1024

// deliveryTimeout bounds the wait for the last deliveries of a run.
const deliveryTimeout = 5 * time.Minute

// BenchmarkAsyncFanout measures asynchronous fan-out end to end: b.N events
// are published, and the timer stops when every subscriber has received
// (and, for watermill, acknowledged) all of them. One op is one event
// delivered to every subscriber; events/s is b.N over that time and
// deliveries/s counts one per event per subscriber.
//
//   - ours: bus.On with bus.Async(1024, bus.Block): each subscriber drains
//     its own bounded queue on its own goroutine; Publish blocks while a
//     queue is full. Every subscriber must see positions 1..b.N in order, or
//     the benchmark fails.
//   - watermill-gochannel: GoChannel with its default Config (Publish does
//     not wait for subscribers; unbuffered output channels), one goroutine
//     per subscriber reading and acking. Its out-of-order deliveries are
//     reported as out-of-order/op (fraction of deliveries), not failed:
//     the non-blocking mode hands each message to its own goroutine.
//   - watermill-gochannel-ack: GoChannel with BlockPublishUntilSubscriberAck,
//     the watermill mode that keeps publish order.
func BenchmarkAsyncFanout(b *testing.B) {
	for _, n := range fanouts {
		name := "subscribers=" + strconv.Itoa(n)
		b.Run("ours/"+name, func(b *testing.B) { benchAsyncOurs(b, n) })
		b.Run("watermill-gochannel/"+name, func(b *testing.B) {
			benchAsyncWatermill(b, gochannel.Config{}, n)
		})
		b.Run("watermill-gochannel-ack/"+name, func(b *testing.B) {
			benchAsyncWatermill(b, gochannel.Config{BlockPublishUntilSubscriberAck: true}, n)
		})
	}
}

func benchAsyncOurs(b *testing.B, subscribers int) {
	f := newOursFanout(b, subscribers, 1, nil, bus.Async(asyncBuffer, bus.Block))
	f.sinks.expect(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	f.publish(b, b.N, false)
	f.sinks.wait(b, deliveryTimeout)
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, subscribers)
	f.close(b)
	if ooo := f.sinks.outOfOrder(); ooo != 0 {
		b.Fatalf("%d of %d deliveries out of order", ooo, b.N*subscribers)
	}
}

func benchAsyncWatermill(b *testing.B, cfg gochannel.Config, subscribers int) {
	w := newWatermillFanout(b, cfg, subscribers)
	w.sinks.expect(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	w.publish(b, b.N)
	w.sinks.wait(b, deliveryTimeout)
	b.StopTimer()
	cpu.report(b)
	reportRate(b, b.N, subscribers)
	b.ReportMetric(float64(w.sinks.outOfOrder())/float64(b.N*subscribers), "out-of-order/op")
	w.close()
}

// BenchmarkPublishAsync measures our background path: PublishAsync queues
// each event for the bus's worker pool (GOMAXPROCS workers, 1024 events
// each; one aggregate's events always go to the same worker) and returns;
// the workers run the synchronous handlers. Events cycle over 64
// aggregates, so both workers are busy; every handler must see each
// aggregate's versions in order, or the benchmark fails. The timer stops
// when every handler has seen every event. Watermill has no counterpart.
func BenchmarkPublishAsync(b *testing.B) {
	for _, n := range fanouts {
		b.Run("ours/handlers="+strconv.Itoa(n), func(b *testing.B) {
			f := newOursFanout(b, n, 64, nil)
			f.sinks.expect(b.N)
			b.ReportAllocs()
			b.ResetTimer()
			cpu := startCPU()
			f.publish(b, b.N, true)
			f.sinks.wait(b, deliveryTimeout)
			b.StopTimer()
			cpu.report(b)
			reportRate(b, b.N, n)
			f.close(b)
			if ooo := f.sinks.outOfOrder(); ooo != 0 {
				b.Fatalf("%d of %d deliveries out of order", ooo, b.N*n)
			}
		})
	}
}
