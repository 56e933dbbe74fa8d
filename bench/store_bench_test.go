package bench

import (
	"context"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
)

// storeStreams is how many aggregates the append benchmarks write to in
// turn, each with its exact expected version (the optimistic check a
// repository makes).
const storeStreams = 1000

// storeReset bounds a store's size in the append benchmarks: after this
// many appends the store is replaced (timer stopped), so that a long run
// measures appending, not the heap growing to gigabytes.
const storeReset = 10_000

// BenchmarkStoreAppend measures eventstore.Memory.Append of pre-built
// envelopes (IDs and times already set, as aggregate.Raise sets them) to
// 1000 streams in turn, each at its exact expected version. One op is one
// Append call; events/s counts events stored. Watermill has no event store,
// so there is no peer.
func BenchmarkStoreAppend(b *testing.B) {
	b.Run("memory/batch=100", func(b *testing.B) { benchAppend(b, 100) })
	b.Run("memory/batch=1", func(b *testing.B) { benchAppend(b, 1) })
}

func benchAppend(b *testing.B, size int) {
	ctx := context.Background()
	ids := aggregateIDs(storeStreams)
	streams := make([]string, len(ids))
	batches := make([][]eventsource.Envelope, len(ids))
	for i, id := range ids {
		streams[i] = eventsource.StreamID("Order", id)
		batches[i] = make([]eventsource.Envelope, size)
		for j := range batches[i] {
			batches[i][j] = orderEnvelope(id)
		}
	}
	store := eventstore.NewMemory()
	appended := 0 // appends to the current store
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		if appended == storeReset {
			b.StopTimer()
			store, appended = eventstore.NewMemory(), 0
			b.StartTimer()
		}
		s := appended % len(streams)
		expected := int64(appended/len(streams)) * int64(size)
		if _, err := store.Append(ctx, streams[s], expected, batches[s]); err != nil {
			b.Fatal(err)
		}
		appended++
	}
	b.StopTimer()
	cpu.report(b)
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkStoreLoad measures reading one aggregate's stream of 1000
// events back with Load, in a store that holds 100 such streams written in
// interleaved batches of 10 (so a stream's events are not contiguous in
// the log). One op is one full Load; events/s counts events yielded.
func BenchmarkStoreLoad(b *testing.B) {
	b.Run("memory/events=1000", func(b *testing.B) {
		const streams, perStream, batch = 100, 1000, 10
		ctx := context.Background()
		store := eventstore.NewMemory()
		ids := aggregateIDs(streams)
		for v := 0; v < perStream; v += batch {
			for _, id := range ids {
				events := make([]eventsource.Envelope, batch)
				for j := range events {
					events[j] = orderEnvelope(id)
				}
				if _, err := store.Append(ctx, eventsource.StreamID("Order", id), int64(v), events); err != nil {
					b.Fatal(err)
				}
			}
		}
		stream := eventsource.StreamID("Order", ids[streams/2])
		b.ReportAllocs()
		b.ResetTimer()
		cpu := startCPU()
		for range b.N {
			var n, sum int64
			for env, err := range store.Load(ctx, stream, 1) {
				if err != nil {
					b.Fatal(err)
				}
				n++
				sum += env.Version
			}
			if n != perStream || sum != perStream*(perStream+1)/2 {
				b.Fatalf("loaded %d events (version sum %d), want %d", n, sum, perStream)
			}
		}
		b.StopTimer()
		cpu.report(b)
		b.ReportMetric(float64(b.N*perStream)/b.Elapsed().Seconds(), "events/s")
	})
}
