package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/repository"
)

// durableStore is what the durable benchmarks need of a store.
type durableStore interface {
	eventstore.Store
	eventstore.SnapshotStore
}

func durableRegistry() *eventsource.Registry {
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[OrderPlaced](reg)
	return reg
}

// openSQLiteBench opens a store in a file of its own under b.TempDir().
func openSQLiteBench(b *testing.B, opts ...sqlite.Option) *sqlite.Store {
	b.Helper()
	opts = append([]sqlite.Option{sqlite.WithRegistry(durableRegistry())}, opts...)
	s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "events.db"), opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	return s
}

// openPostgresBench returns a store in a fresh schema of its own, dropped
// when the benchmark ends, so nothing shared is touched.
func openPostgresBench(b *testing.B) *postgres.Store {
	b.Helper()
	url := testenv.URL(b, "EVENTSOURCE_POSTGRES_URL",
		"start PostgreSQL and set EVENTSOURCE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable to run the PostgreSQL benchmarks")
	ctx := context.Background()
	pool := testenv.PostgresPool(b, url, testenv.PostgresSchema(b, url, "bench_"))
	if err := postgres.Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	return postgres.New(pool, durableRegistry())
}

// BenchmarkDurableAppend measures Append on the durable stores: batches of
// pre-built envelopes to 1000 streams in turn, each at its exact expected
// version, as BenchmarkStoreAppend does for the memory store. One op is one
// Append call; events/s counts events stored. Single-event appends also
// report their latency percentiles (p50-µs, p99-µs).
//
// SQLite runs with its default, synchronous=FULL (every commit waits for
// the disk), and with WithSynchronousNormal.
func BenchmarkDurableAppend(b *testing.B) {
	for _, size := range []int{100, 1} {
		b.Run(fmt.Sprintf("sqlite/batch=%d", size), func(b *testing.B) {
			benchDurableAppend(b, openSQLiteBench(b), size)
		})
		b.Run(fmt.Sprintf("sqlite-sync-normal/batch=%d", size), func(b *testing.B) {
			benchDurableAppend(b, openSQLiteBench(b, sqlite.WithSynchronousNormal()), size)
		})
		b.Run(fmt.Sprintf("postgres/batch=%d", size), func(b *testing.B) {
			benchDurableAppend(b, openPostgresBench(b), size)
		})
	}
}

func benchDurableAppend(b *testing.B, store eventstore.Store, size int) {
	ctx := context.Background()
	run := uuid.NewString()[:8] // stream names of this run only
	ids := aggregateIDs(storeStreams)
	streams := make([]string, len(ids))
	batches := make([][]eventsource.Envelope, len(ids))
	for i, id := range ids {
		id = run + "-" + id
		streams[i] = eventsource.StreamID("Order", id)
		batches[i] = make([]eventsource.Envelope, size)
		for j := range batches[i] {
			batches[i][j] = orderEnvelope(id)
		}
	}
	var latencies []time.Duration
	if size == 1 {
		latencies = make([]time.Duration, 0, 1<<16)
	}
	appended := 0
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		s := appended % len(streams)
		expected := int64(appended/len(streams)) * int64(size)
		start := time.Now()
		if _, err := store.Append(ctx, streams[s], expected, batches[s]); err != nil {
			b.Fatal(err)
		}
		if latencies != nil {
			latencies = append(latencies, time.Since(start))
		}
		appended++
	}
	cpu.report(b)
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
	if len(latencies) > 0 {
		slices.Sort(latencies)
		at := func(q float64) float64 {
			return float64(latencies[int(q*float64(len(latencies)-1))].Nanoseconds()) / 1e3
		}
		b.ReportMetric(at(0.50), "p50-µs")
		b.ReportMetric(at(0.99), "p99-µs")
	}
}

// benchOrder is the aggregate of the load benchmarks: a running total of
// OrderPlaced amounts, snapshotted as JSON.
type benchOrder struct {
	aggregate.Base
	Orders  int64 `json:"orders"`
	Total   int64 `json:"total"`
	applied int   // events applied since construction: what a load replayed
}

func newBenchOrder() *benchOrder          { return &benchOrder{} }
func (*benchOrder) AggregateType() string { return "BenchOrder" }
func (*benchOrder) SnapshotSchema() int   { return 1 }
func (o *benchOrder) Apply(e eventsource.Event) {
	o.applied++
	if e, ok := e.(OrderPlaced); ok {
		o.Orders++
		o.Total += e.Amount
	}
}
func (o *benchOrder) MarshalSnapshot() ([]byte, error) {
	return json.Marshal(struct{ Orders, Total int64 }{o.Orders, o.Total})
}
func (o *benchOrder) UnmarshalSnapshot(data []byte) error {
	var s struct{ Orders, Total int64 }
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	o.Orders, o.Total = s.Orders, s.Total
	return nil
}

// snapshotTail is how many events a load through the snapshot replays: the
// snapshot is this far behind the head, as it is between two snapshots of
// an every-N policy.
const snapshotTail = 50

// BenchmarkSnapshotLoad measures repository.Load of one aggregate with a
// history of 1k, 10k and 100k events, through its snapshot (taken by the
// repository's policy, 50 events behind the head: the load reads the
// snapshot and replays 50 events) and, for contrast, without snapshots
// (replaying every event). One op is one Load. The stores hold only this
// aggregate; SQLite runs with WithSynchronousNormal, which only speeds up
// the set-up.
func BenchmarkSnapshotLoad(b *testing.B) {
	for _, history := range []int{1_000, 10_000, 100_000} {
		for _, backend := range []string{"sqlite", "postgres"} {
			b.Run(fmt.Sprintf("%s/events=%d", backend, history), func(b *testing.B) {
				var store durableStore
				if backend == "sqlite" {
					store = openSQLiteBench(b, sqlite.WithSynchronousNormal())
				} else {
					store = openPostgresBench(b)
				}
				id := writeHistory(b, store, history)
				b.Run("snapshot", func(b *testing.B) {
					repo := repository.New(store, nil, newBenchOrder, repository.WithSnapshots(store, history-snapshotTail))
					benchLoad(b, repo, id, history, snapshotTail)
				})
				b.Run("no-snapshot", func(b *testing.B) {
					benchLoad(b, repository.New(store, nil, newBenchOrder), id, history, history)
				})
			})
		}
	}
}

// writeHistory saves history events of a new aggregate through a
// repository whose policy takes one snapshot, snapshotTail events before
// the head, and returns the aggregate's ID.
func writeHistory(b *testing.B, store durableStore, history int) string {
	b.Helper()
	ctx := context.Background()
	repo := repository.New(store, nil, newBenchOrder, repository.WithSnapshots(store, history-snapshotTail))
	id := "bench-" + uuid.NewString()
	o := newBenchOrder()
	o.SetID(id)
	for o.Version() < int64(history) {
		// Saves of up to 1000 events; one ends exactly where the snapshot
		// is due, so that it is taken there.
		end := min(o.Version()+1000, int64(history))
		if due := int64(history - snapshotTail); o.Version() < due && end > due {
			end = due
		}
		for o.Version() < end {
			aggregate.Raise(o, OrderPlaced{OrderID: id, CustomerID: "customer-7", Amount: 4500})
		}
		if err := repo.Save(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	snap, err := store.LoadSnapshot(ctx, eventsource.StreamID("BenchOrder", id))
	if err != nil || snap.Version != int64(history-snapshotTail) {
		b.Fatalf("snapshot at version %d, %v; want %d", snap.Version, err, history-snapshotTail)
	}
	return id
}

func benchLoad(b *testing.B, repo *repository.Repository[*benchOrder], id string, history, replayed int) {
	ctx := context.Background()
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		o, err := repo.Load(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		if o.Version() != int64(history) || o.Orders != int64(history) || o.applied != replayed {
			b.Fatalf("loaded version %d with %d orders after replaying %d events; want %d, %d, %d",
				o.Version(), o.Orders, o.applied, history, history, replayed)
		}
	}
	cpu.report(b)
	b.ReportMetric(float64(replayed), "replayed/op")
}
