package consumer

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/bus"
)

// Shut waits for the calls running, but only as long as its ctx: a
// Publish that never returns (a blocked broker, no deadline) must not hold
// Close past its ctx. New calls are refused at once.
func TestGateShutHonoursContext(t *testing.T) {
	var g Gate
	if err := g.Enter(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := g.Shut(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shut with a call running = %v, want the ctx's deadline", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("Shut returned after %v, long past its ctx", waited)
	}
	if err := g.Enter(); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Enter after Shut = %v, want bus.ErrClosed", err)
	}
	g.Leave()
	if err := g.Shut(context.Background()); err != nil {
		t.Errorf("Shut with nothing running = %v", err)
	}
}

// Shut returns as soon as the last running call leaves.
func TestGateShutWaitsForRunningCalls(t *testing.T) {
	var g Gate
	if err := g.Enter(); err != nil {
		t.Fatal(err)
	}
	var finished atomic.Bool
	go func() {
		time.Sleep(20 * time.Millisecond) // the call runs a little while Shut waits
		finished.Store(true)
		g.Leave()
	}()
	if err := g.Shut(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Error("Shut returned while a call was still running")
	}
}
