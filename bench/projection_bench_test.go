package bench

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/projection"
)

// projectionEvents is how many stored events a catch-up reads.
const projectionEvents = 50_000

// noopProjection declares OrderPlaced and does nothing with it.
type noopProjection struct{}

func (noopProjection) EventTypes() []string                               { return []string{OrderPlaced{}.EventType()} }
func (noopProjection) Handle(context.Context, eventsource.Envelope) error { return nil }

// BenchmarkProjectionCatchUp measures a projection catching up on 50,000
// stored events (filled once, untimed) with a no-op projection, on SQLite
// and PostgreSQL. One op is one whole catch-up from position 0 under a
// fresh checkpoint name; events/s is the figure to read, cpu-ns/event the
// one to compare across noisy runs.
//
//   - <store>/Follower: eventstore.Follower.CatchUp saving every 1,000
//     events, with a no-op fn: the ceiling, measured in the same run.
//   - <store>/Runner: projection.Runner with its defaults (checkpoint every
//     1,000 events or second); pct-of-follower is its events/s as a
//     percentage of the Follower's.
func BenchmarkProjectionCatchUp(b *testing.B) {
	for _, st := range relayStores {
		b.Run(st.name, func(b *testing.B) {
			store := st.open(b)
			fillStore(b, store, projectionEvents)
			var ceiling float64
			b.Run("Follower", func(b *testing.B) {
				catchUps(b, func(name string) (int, error) {
					f := &eventstore.Follower{Name: name, Store: store, Checkpoints: store, SaveEvery: 1000}
					return f.CatchUp(benchCtx, func(context.Context, eventsource.Envelope) error { return nil })
				})
				ceiling = projectionEvents * float64(b.N) / b.Elapsed().Seconds()
			})
			b.Run("Runner", func(b *testing.B) {
				catchUps(b, func(name string) (int, error) {
					return projection.NewRunner(name, noopProjection{}, store, store).CatchUp(benchCtx)
				})
				if ceiling > 0 {
					b.ReportMetric(100*projectionEvents*float64(b.N)/b.Elapsed().Seconds()/ceiling, "pct-of-follower")
				}
			})
		})
	}
}

// catchUps times b.N catch-ups, each under a fresh checkpoint name.
func catchUps(b *testing.B, catchUp func(name string) (int, error)) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		n, err := catchUp("bench-" + uuid.NewString())
		if err != nil || n != projectionEvents {
			b.Fatalf("caught up %d of %d: %v", n, projectionEvents, err)
		}
	}
	b.StopTimer()
	reportRate(b, projectionEvents*b.N, 1)
	// This process's CPU per event (the database server's not included):
	// unlike events/s, it does not drop when other processes take the
	// machine's cores.
	if end, ok := processCPU(); ok && cpu.ok {
		b.ReportMetric(float64(end-cpu.start)/float64(projectionEvents*b.N), "cpu-ns/event")
	}
}

// signalProjection records the last position it applied and signals it
// without ever blocking.
type signalProjection struct {
	last    *atomic.Int64
	applied chan struct{}
}

func (signalProjection) EventTypes() []string { return []string{OrderPlaced{}.EventType()} }
func (p signalProjection) Handle(_ context.Context, env eventsource.Envelope) error {
	p.last.Store(env.Position)
	select {
	case p.applied <- struct{}{}:
	default:
	}
	return nil
}

// BenchmarkProjectionLive measures the latency of a live projection: one
// op appends one event (Append returns) and waits until a running
// Runner's projection has applied it; p50-µs and p99-µs are that latency.
// The runner's poll interval is an hour, so only the store's append
// notification wakes it.
//
//   - sqlite, postgres: the runner on the same Store value as the writer
//     (in-process notification).
//   - postgres/other-process: the runner on a Store of its own pool, as in
//     another process: only PostgreSQL's LISTEN/NOTIFY wakes it.
func BenchmarkProjectionLive(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		s := openSQLiteBench(b)
		benchLive(b, s, s)
	})
	b.Run("postgres", func(b *testing.B) {
		w, _ := openPostgresPair(b)
		benchLive(b, w, w)
	})
	b.Run("postgres/other-process", func(b *testing.B) {
		w, r := openPostgresPair(b)
		benchLive(b, w, r)
	})
}

type checkpointedStore interface {
	eventstore.Store
	eventstore.CheckpointStore
}

func benchLive(b *testing.B, writer eventstore.Store, reader checkpointedStore) {
	p := signalProjection{last: new(atomic.Int64), applied: make(chan struct{}, 1)}
	r := projection.NewRunner("live-"+uuid.NewString(), p, reader, reader, projection.WithLogger(quietLogger()))
	ctx, cancel := context.WithCancel(benchCtx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, time.Hour) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	id := "live-" + uuid.NewString()
	stream := eventsource.StreamID("Order", id)
	wait := func(pos int64) {
		timeout := time.NewTimer(30 * time.Second)
		defer timeout.Stop()
		for p.last.Load() < pos {
			select {
			case <-p.applied:
			case <-timeout.C:
				b.Fatalf("event at position %d not applied within 30s (status %+v)", pos, r.Status())
			}
		}
	}
	// Warm up: the first event also waits for the listener to connect.
	appendOne := func() int64 {
		out, err := writer.Append(benchCtx, stream, eventstore.AnyVersion, []eventsource.Envelope{orderEnvelope(id)})
		if err != nil {
			b.Fatal(err)
		}
		return out[0].Position
	}
	wait(appendOne())
	for r.Status().State != eventstore.StateLive {
		wait(appendOne())
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		pos := appendOne()
		start := time.Now() // from Append returning
		wait(pos)
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	at := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// openPostgresPair returns two stores on one fresh schema through two
// pools, as two processes would have; the schema is dropped at the end.
func openPostgresPair(b *testing.B) (*postgres.Store, *postgres.Store) {
	b.Helper()
	url := testenv.URL(b, "EVENTSOURCE_POSTGRES_URL",
		"start PostgreSQL and set EVENTSOURCE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable to run the PostgreSQL benchmarks")
	ctx := context.Background()
	schema := testenv.PostgresSchema(b, url, "bench_")
	open := func() *postgres.Store {
		pool := testenv.PostgresPool(b, url, schema)
		if err := postgres.Migrate(ctx, pool); err != nil {
			b.Fatal(err)
		}
		return postgres.New(pool, durableRegistry())
	}
	return open(), open()
}
