package eventstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) eventstore.Store { return eventstore.NewMemory() })
}

// The suite is written for shared stores; run it once more with every
// subtest on the same instance.
func TestMemoryConformanceShared(t *testing.T) {
	s := eventstore.NewMemory()
	storetest.Run(t, func(t *testing.T) eventstore.Store { return s })
}

func TestMemoryCheckpointsConformance(t *testing.T) {
	storetest.RunCheckpoints(t, func(t *testing.T) eventstore.CheckpointStore { return eventstore.NewMemoryCheckpoints() })
}

func deposit(n int) eventsource.Envelope {
	env := eventsource.NewEnvelope(storetest.Deposited{Amount: n})
	env.AggregateType, env.AggregateID = "Account", "1"
	return env
}

func TestMemoryRejectsNilEvent(t *testing.T) {
	s := eventstore.NewMemory()
	batch := []eventsource.Envelope{deposit(1), {Type: "storetest.Deposited"}}
	_, err := s.Append(t.Context(), "Account-1", eventstore.NoStream, batch)
	if !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Fatalf("err = %v, want ErrInvalidEvent", err)
	}
	for range s.ReadAll(t.Context(), 0) {
		t.Fatal("the valid event of a rejected batch was stored")
	}
	// The stream is still new: the rejected batch did not consume versions
	// or positions.
	got, err := s.Append(t.Context(), "Account-1", eventstore.NoStream, []eventsource.Envelope{deposit(1)})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Version != 1 || got[0].Position != 1 {
		t.Fatalf("Version %d, Position %d; want 1, 1", got[0].Version, got[0].Position)
	}
}

func TestMemoryPositionsAcrossChunks(t *testing.T) {
	// Batches that straddle the log's internal block boundaries.
	s := eventstore.NewMemory()
	ctx := t.Context()
	const batches, size = 7, 333
	for b := range batches {
		batch := make([]eventsource.Envelope, size)
		for i := range batch {
			batch[i] = deposit(b*size + i)
		}
		if _, err := s.Append(ctx, "Account-1", int64(b*size), batch); err != nil {
			t.Fatal(err)
		}
	}
	want := int64(1)
	for env, err := range s.ReadAll(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if env.Position != want || env.Version != want || env.Event != (storetest.Deposited{Amount: int(want - 1)}) {
			t.Fatalf("at %d: Position %d, Version %d, Event %v", want, env.Position, env.Version, env.Event)
		}
		want++
	}
	if want-1 != batches*size {
		t.Fatalf("read %d events, want %d", want-1, batches*size)
	}
	n := 0
	for env, err := range s.Load(ctx, "Account-1", 1000) {
		if err != nil {
			t.Fatal(err)
		}
		if env.Version != int64(1000+n) {
			t.Fatalf("Load: Version %d, want %d", env.Version, 1000+n)
		}
		n++
	}
	if n != batches*size-999 {
		t.Fatalf("Load(1000) yielded %d events, want %d", n, batches*size-999)
	}
}

func TestMemoryCheckpointsRejectNegative(t *testing.T) {
	c := eventstore.NewMemoryCheckpoints()
	if err := c.SaveCheckpoint(context.Background(), "p", -3); err == nil {
		t.Fatal("negative checkpoint accepted")
	}
}

func BenchmarkMemoryAppendBatch100(b *testing.B) {
	s := eventstore.NewMemory()
	ctx := context.Background()
	batch := make([]eventsource.Envelope, 100)
	for i := range batch {
		batch[i] = deposit(i)
	}
	streams := []string{"Account-1", "Account-2", "Account-3", "Account-4"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Append(ctx, streams[i%len(streams)], eventstore.AnyVersion, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
}
