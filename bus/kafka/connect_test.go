package kafka

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/bus/bustest"
)

// slack is how long after its ctx ended a constructor may still return.
const slack = 500 * time.Millisecond

// silentServer accepts connections and never answers.
func silentServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}

// TestNewIsBoundedByContext: New (ensureTopics) honours its ctx's
// deadline and cancellation against a broker that never answers.
func TestNewIsBoundedByContext(t *testing.T) {
	addr := silentServer(t)
	for name, tc := range map[string]struct {
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		"deadline": {func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Second)
		}, context.DeadlineExceeded},
		"cancelled": {func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(time.Second, cancel)
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			b, err := New(ctx, Config{Brokers: []string{addr}, Registry: bustest.NewRegistry(), CreateTopics: true,
				Logger: slog.New(slog.DiscardHandler)})
			took := time.Since(start)
			if err == nil {
				_ = b.Close(context.Background())
				t.Fatal("New against a silent broker succeeded")
			}
			if took > time.Second+slack {
				t.Errorf("New took %v with a ctx ending after 1s", took)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("New = %v, want an error wrapping %v", err, tc.want)
			}
		})
	}
}
