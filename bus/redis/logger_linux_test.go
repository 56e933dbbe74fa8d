package redis

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/bus/bustest"
)

// captureStderr redirects file descriptor 2 (go-redis's default logger
// holds the *os.File, so swapping os.Stderr would not do) until the
// returned function, which restores it and returns what was written.
func captureStderr(t *testing.T) func() string {
	t.Helper()
	saved, err := syscall.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(int(w.Fd()), 2, 0); err != nil {
		t.Fatal(err)
	}
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	var once sync.Once
	var got string
	restore := func() string {
		once.Do(func() {
			_ = syscall.Dup3(saved, 2, 0)
			_ = syscall.Close(saved)
			_ = w.Close()
			got = <-out
			_ = r.Close()
		})
		return got
	}
	t.Cleanup(func() { restore() })
	return restore
}

// recordHandler keeps the messages logged through it.
type recordHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}

func (h *recordHandler) goRedisLines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, m := range h.msgs {
		if strings.HasPrefix(m, "go-redis: ") {
			out = append(out, m)
		}
	}
	return out
}

// TestGoRedisLogsReachTheBusLogger: during an outage go-redis used to write
// unstructured lines to stderr (44 in 6s); they must reach the bus's
// logger instead.
func TestGoRedisLogsReachTheBusLogger(t *testing.T) {
	url, proxy := proxiedURL(t)
	h := &recordHandler{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := New(ctx, Config{URL: url, Registry: bustest.NewRegistry(), StreamPrefix: prefix(), Logger: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer closeBus(t, b)
	stderr := captureStderr(t)
	proxy.stop() // Redis is gone: its port is closed
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		if err := b.Publish(pctx, bustest.NewEnvelope("a", 1, bustest.Ping{})); err == nil {
			t.Fatal("Publish succeeded with Redis gone")
		}
		pcancel()
		time.Sleep(100 * time.Millisecond)
	}
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	_ = b.Close(cctx)
	if got := stderr(); got != "" {
		t.Errorf("written to stderr during the outage:\n%s", got)
	}
	if lines := h.goRedisLines(); len(lines) == 0 {
		t.Errorf("the bus's logger received no go-redis line; it got %q", h.msgs)
	} else {
		t.Logf("%d go-redis lines, the first: %s", len(lines), lines[0])
	}
}

// TestGoRedisLinesOfOtherClientsGoToDefaultLogger: a line that concerns no
// bus (from the application's own go-redis clients) goes to slog.Default().
func TestGoRedisLinesOfOtherClientsGoToDefaultLogger(t *testing.T) {
	h := &recordHandler{}
	prev := slog.Default()
	slog.SetDefault(slog.New(h))
	defer slog.SetDefault(prev)
	bh := &recordHandler{}
	busLog := slog.New(bh)

	logRouter{}.Printf(context.Background(), "redis: unrelated: %v", errors.New("boom"))
	logRouter{}.Printf(context.Background(), "redis: dial: %v", &dialError{log: busLog, err: errors.New("refused")})
	logRouter{}.Printf(withGoRedisLogger(context.Background(), busLog), "redis: during a bus call")

	if got := h.goRedisLines(); len(got) != 1 || got[0] != "go-redis: unrelated: boom" {
		t.Errorf("default logger got %q", got)
	}
	if got := bh.goRedisLines(); len(got) != 2 || got[0] != "go-redis: dial: refused" {
		t.Errorf("bus logger got %q", got)
	}
}
