package rabbitmq

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

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

// wrongPasswordURL is the test broker's URL with a password it refuses.
func wrongPasswordURL(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(amqpURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "not-the-password")
	return u.String()
}

func newWithin(ctx context.Context, cfg Config) (time.Duration, error) {
	cfg.Registry = bustest.NewRegistry()
	cfg.Logger = slog.New(slog.DiscardHandler)
	start := time.Now()
	b, err := New(ctx, cfg)
	took := time.Since(start)
	if err == nil {
		_ = b.Close(context.Background())
	}
	return took, err
}

// TestNewReturnsByContextDeadline: New used to take DialTimeout (10s)
// against a server that never answers, and 3s on a wrong password,
// whatever its ctx.
func TestNewReturnsByContextDeadline(t *testing.T) {
	silent := silentServer(t)
	for name, url := range map[string]func(testing.TB) string{
		"silent server":     func(testing.TB) string { return "amqp://guest:guest@" + silent + "/" },
		"silent TLS server": func(testing.TB) string { return "amqps://guest:guest@" + silent + "/" },
		"wrong password":    wrongPasswordURL,
	} {
		t.Run(name, func(t *testing.T) {
			url := url(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			took, err := newWithin(ctx, Config{URL: url})
			if err == nil {
				t.Fatal("New succeeded")
			}
			if took > time.Second+slack {
				t.Errorf("New took %v with a 1s ctx", took)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("New = %v, want an error wrapping context.DeadlineExceeded", err)
			}
			if strings.Contains(err.Error(), "not-the-password") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

func TestNewReturnsWhenContextCancelled(t *testing.T) {
	silent := silentServer(t)
	for name, url := range map[string]func(testing.TB) string{
		"silent server":  func(testing.TB) string { return "amqp://guest:guest@" + silent + "/" },
		"wrong password": wrongPasswordURL,
	} {
		t.Run(name, func(t *testing.T) {
			url := url(t)
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(300*time.Millisecond, cancel)
			took, err := newWithin(ctx, Config{URL: url})
			if err == nil {
				t.Fatal("New succeeded")
			}
			if took > 300*time.Millisecond+slack {
				t.Errorf("New took %v with a ctx cancelled after 300ms", took)
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("New = %v, want an error wrapping context.Canceled", err)
			}
		})
	}
}

// TestNewReturnsByDialTimeout: a DialTimeout shorter than ctx bounds the
// handshakes too.
func TestNewReturnsByDialTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	took, err := newWithin(ctx, Config{URL: "amqp://guest:guest@" + silentServer(t) + "/", DialTimeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("New succeeded")
	}
	if took > 500*time.Millisecond+slack {
		t.Errorf("New took %v with a DialTimeout of 500ms", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "DialTimeout") {
		t.Errorf("New = %v, want an error naming DialTimeout and wrapping context.DeadlineExceeded", err)
	}
}

// TestWrongPasswordWithTime: given the time, a wrong password still reads
// as one. RabbitMQ closes the socket 3s after the credentials, since
// amqp091 does not advertise authentication_failure_close.
func TestWrongPasswordWithTime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := newWithin(ctx, Config{URL: wrongPasswordURL(t)})
	if !errors.Is(err, amqp.ErrCredentials) {
		t.Errorf("New with a wrong password = %v, want amqp.ErrCredentials", err)
	}
}

func TestNewStillConnects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := newWithin(ctx, Config{URL: amqpURL(t), Exchange: exchange()}); err != nil {
		t.Fatal(err)
	}
}

// TestGuardConnClosesWhenContextEnds: the calls that follow the handshake
// (channels, declares) end with ctx too.
func TestGuardConnClosesWhenContextEnds(t *testing.T) {
	url := amqpURL(t)
	conn, err := dialContext(context.Background(), url, amqp.Config{}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	release := guardConn(context.Background(), conn)
	if err := release(nil); err != nil || conn.IsClosed() {
		t.Fatalf("release with ctx alive = %v, connection closed %v", err, conn.IsClosed())
	}

	ctx, cancel := context.WithCancel(context.Background())
	release = guardConn(ctx, conn)
	cancel()
	deadline := time.Now().Add(2 * time.Second)
	for !conn.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling, bounded by the deadline
	}
	if !conn.IsClosed() {
		t.Fatal("connection still open after its ctx was cancelled")
	}
	if err := release(nil); !errors.Is(err, context.Canceled) {
		t.Errorf("release after cancel = %v, want context.Canceled", err)
	}
}
