package sleep

import (
	"context"
	"testing"
	"time"
)

func TestFor(t *testing.T) {
	if !For(context.Background(), time.Millisecond) {
		t.Error("For on a live context = false")
	}
	if !For(context.Background(), 0) {
		t.Error("For(0) on a live context = false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if For(ctx, time.Hour) || For(ctx, 0) {
		t.Error("For on a cancelled context = true")
	}
	if time.Since(start) > time.Second {
		t.Error("For waited on a cancelled context")
	}
}
