package bus_test

import (
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// goroutines returns the stack of every goroutine, keyed by goroutine ID.
// IDs are never reused, so comparing two snapshots tells which goroutines
// a test started, whatever other tests left behind.
func goroutines() map[string]string {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if f := strings.Fields(g); len(f) > 1 && f[0] == "goroutine" {
			out[f[1]] = g
		}
	}
	return out
}

// busFrame marks code of package bus in a stack (bus_test frames excluded).
const busFrame = "eventsource-go/eventsource/bus."

// busGoroutines returns the goroutines running or started by package bus.
func busGoroutines() map[string]string {
	all := goroutines()
	for id, g := range all {
		if !strings.Contains(g, busFrame) {
			delete(all, id)
		}
	}
	return all
}

// waitBusGoroutinesGone waits until no goroutine of package bus is left
// that was not in before.
func waitBusGoroutinesGone(t *testing.T, before map[string]string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for id, g := range busGoroutines() {
			if _, ok := before[id]; !ok {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bus goroutines still running after %v:\n%s", len(left), timeout, strings.Join(left, "\n\n"))
		}
		time.Sleep(time.Millisecond) // polling interval, bounded by the deadline
	}
}

// waitParked waits until a goroutine is blocked in a select or channel
// operation inside fn, a function of package bus such as
// "(*InProcess).PublishAsync": the only way to know, without a fixed
// sleep, that a publisher is waiting rather than about to.
func waitParked(t *testing.T, fn string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, g := range goroutines() {
			header, _, _ := strings.Cut(g, "\n")
			if (strings.Contains(header, "[select") || strings.Contains(header, "[chan send")) &&
				strings.Contains(g, busFrame+fn+"(") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine blocked in %s after %v", fn, timeout)
		}
		time.Sleep(time.Millisecond) // polling interval, bounded by the deadline
	}
}
