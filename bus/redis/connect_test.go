package redis

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
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

// tcpProxy forwards connections to target until stop, after which its
// port is closed: clients see Redis go away.
type tcpProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln}
	t.Cleanup(p.stop)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(c, u); _ = c.Close() }()
			go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
		}
	}()
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) stop() {
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
}

// proxiedURL is the test Redis URL with its host replaced by a proxy's.
func proxiedURL(t testing.TB) (string, *tcpProxy) {
	t.Helper()
	u, err := url.Parse(redisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, u.Host)
	u.Host = p.addr()
	return u.String(), p
}

// TestNewReturnsByContextDeadline: New used to wait out go-redis's
// DialTimeout (5s) against a server that never answers, whatever its ctx.
func TestNewReturnsByContextDeadline(t *testing.T) {
	addr := silentServer(t)
	for _, scheme := range []string{"redis", "rediss"} {
		t.Run(scheme, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			b, err := New(ctx, Config{URL: scheme + "://" + addr + "/0", Registry: bustest.NewRegistry(),
				Logger: slog.New(slog.DiscardHandler)})
			took := time.Since(start)
			if err == nil {
				_ = b.Close(context.Background())
				t.Fatal("New against a silent server succeeded")
			}
			if took > time.Second+slack {
				t.Errorf("New took %v with a 1s ctx", took)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("New = %v, want an error wrapping context.DeadlineExceeded", err)
			}
		})
	}
}

func TestNewReturnsWhenContextCancelled(t *testing.T) {
	addr := silentServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	b, err := New(ctx, Config{URL: "redis://" + addr + "/0", Registry: bustest.NewRegistry(),
		Logger: slog.New(slog.DiscardHandler)})
	took := time.Since(start)
	if err == nil {
		_ = b.Close(context.Background())
		t.Fatal("New against a silent server succeeded")
	}
	if took > 300*time.Millisecond+slack {
		t.Errorf("New took %v with a ctx cancelled after 300ms", took)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("New = %v, want an error wrapping context.Canceled", err)
	}
}

// TestNewStillConnects: the bounded connect changes nothing for a
// reachable Redis.
func TestNewStillConnects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := New(ctx, Config{URL: redisURL(t), Registry: bustest.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	closeBus(t, b)
}
