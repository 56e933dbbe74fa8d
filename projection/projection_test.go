package projection_test

import (
	"context"
	"errors"
	"testing"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/projection"
)

// pingCounter counts Ping events and can be told to fail once on one N.
type pingCounter struct {
	sum    int
	seen   int
	failOn int
}

func (p *pingCounter) EventTypes() []string { return []string{bustest.Ping{}.EventType()} }
func (p *pingCounter) Handle(_ context.Context, env eventsource.Envelope) error {
	n := env.Event.(bustest.Ping).N
	if n == p.failOn {
		p.failOn = 0
		return errors.New("transient failure")
	}
	p.sum += n
	p.seen++
	return nil
}
func (p *pingCounter) Reset(context.Context) error { p.sum, p.seen = 0, 0; return nil }

func appendEvents(t *testing.T, store eventstore.Store, stream string, events ...eventsource.Event) {
	t.Helper()
	var envs []eventsource.Envelope
	for _, e := range events {
		envs = append(envs, bustest.NewEnvelope(stream, 0, e))
	}
	if _, err := store.Append(context.Background(), stream, eventstore.AnyVersion, envs); err != nil {
		t.Fatal(err)
	}
}

func TestRunnerCatchUpCheckpointAndRebuild(t *testing.T) {
	ctx := context.Background()
	store := eventstore.NewMemory()
	checkpoints := eventstore.NewMemoryCheckpoints()
	appendEvents(t, store, "s1", bustest.Ping{N: 1}, bustest.Pong{N: 100}, bustest.Ping{N: 2})
	p := &pingCounter{failOn: 3}
	r := projection.NewRunner("pings", p, store, checkpoints)

	if n, err := r.CatchUp(ctx); err != nil || n != 3 || p.sum != 3 {
		t.Fatalf("first catch-up read %d, sum %d, %v; want 3 events read, sum 3 (Pong ignored)", n, p.sum, err)
	}
	appendEvents(t, store, "s2", bustest.Ping{N: 3}, bustest.Ping{N: 4})
	if _, err := r.CatchUp(ctx); err == nil {
		t.Fatal("a failing projection did not stop the catch-up")
	}
	if cp, _ := checkpoints.Checkpoint(ctx, "pings"); cp != 3 {
		t.Fatalf("checkpoint after a failure at position 4 = %d, want 3", cp)
	}
	if n, err := r.CatchUp(ctx); err != nil || n != 2 || p.sum != 10 || p.seen != 4 {
		t.Fatalf("retry read %d, sum %d, seen %d, %v; want 2 read, sum 10, 4 pings", n, p.sum, p.seen, err)
	}

	// A second runner with the same checkpoint name resumes, not restarts.
	resumed := &pingCounter{}
	if n, err := projection.NewRunner("pings", resumed, store, checkpoints).CatchUp(ctx); err != nil || n != 0 {
		t.Fatalf("resumed runner read %d, %v; want 0", n, err)
	}

	if n, err := r.Rebuild(ctx); err != nil || n != 5 || p.sum != 10 || p.seen != 4 {
		t.Fatalf("rebuild read %d, sum %d, seen %d, %v; want 5, 10, 4", n, p.sum, p.seen, err)
	}
}

// plainProjection cannot be reset.
type plainProjection struct{ *bustest.Recorder }

func (plainProjection) EventTypes() []string { return []string{bustest.Ping{}.EventType()} }

func TestRebuildNeedsResetter(t *testing.T) {
	r := projection.NewRunner("x", plainProjection{bustest.NewRecorder()}, eventstore.NewMemory(), eventstore.NewMemoryCheckpoints())
	if _, err := r.Rebuild(context.Background()); err == nil {
		t.Error("Rebuild of a projection without Reset succeeded")
	}
}
