package main

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The guard, request by request: what a forged or cross-site request gets
// back. A request that passes the guard reaches a console without a bus,
// which answers 404; the guard's refusals are 401 and 403.
func TestConsoleGuard(t *testing.T) {
	e, _ := testEnv(t)
	open := (&console{e: e, loopback: true}).handler()
	const token = "s3cr3t-console-token"
	e.secrets.add(token)
	locked := (&console{e: e, token: token}).handler()
	purge := `{"group":"billing","id":"1-1"}`
	cases := []struct {
		name    string
		h       http.Handler
		method  string
		target  string
		headers map[string]string
		want    int
	}{
		{"loopback POST without the header", open, "POST", "http://127.0.0.1:8080/api/dlq/purge", nil, 403},
		{"loopback POST from another origin", open, "POST", "http://127.0.0.1:8080/api/dlq/purge", map[string]string{tokenHeader: "x", "Origin": "http://evil.example"}, 403},
		{"loopback POST from another local port", open, "POST", "http://127.0.0.1:8080/api/dlq/purge", map[string]string{tokenHeader: "x", "Origin": "http://127.0.0.1:9999"}, 403},
		{"loopback POST with Origin null", open, "POST", "http://127.0.0.1:8080/api/dlq/purge", map[string]string{tokenHeader: "x", "Origin": "null"}, 403},
		{"rebound Host", open, "GET", "http://evil.example:8080/api/overview", nil, 403},
		{"rebound Host, static page", open, "GET", "http://evil.example:8080/", nil, 403},
		{"loopback POST same origin", open, "POST", "http://127.0.0.1:8080/api/dlq/purge", map[string]string{tokenHeader: "x", "Origin": "http://127.0.0.1:8080"}, 404},
		{"GET on a write endpoint", open, "GET", "http://127.0.0.1:8080/api/dlq/purge", nil, 404},                              // the file server: nothing runs
		{"non-canonical path", open, "POST", "http://127.0.0.1:8080//api/dlq/purge", map[string]string{tokenHeader: "x"}, 307}, // redirected, then guarded again
		{"token: none", locked, "POST", "http://10.0.0.5:8080/api/dlq/purge", nil, 401},
		{"token: wrong", locked, "POST", "http://10.0.0.5:8080/api/dlq/purge", map[string]string{tokenHeader: "s3cr3t-console-tokeN"}, 401},
		{"token: right, other origin", locked, "POST", "http://10.0.0.5:8080/api/dlq/purge", map[string]string{tokenHeader: token, "Origin": "http://evil.example"}, 403},
		{"token: right", locked, "POST", "http://10.0.0.5:8080/api/dlq/purge", map[string]string{tokenHeader: token}, 404},
		{"token: reads need it too", locked, "GET", "http://10.0.0.5:8080/api/overview", nil, 401},
		{"token: tail with a wrong query token", locked, "GET", "http://10.0.0.5:8080/api/tail?token=nope", nil, 401},
		{"token: the page itself is public", locked, "GET", "http://10.0.0.5:8080/", nil, 200},
	}
	for _, c := range cases {
		req := httptest.NewRequest(c.method, c.target, strings.NewReader(purge))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range c.headers {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		c.h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("%s: status %d, want %d: %s", c.name, rec.Code, c.want, rec.Body)
		}
		if strings.Contains(rec.Body.String(), token) {
			t.Errorf("%s: the token is echoed: %s", c.name, rec.Body)
		}
	}
}

// tailSpy reports when the broker's tail returns.
type tailSpy struct {
	broker
	done chan error
}

func (s tailSpy) tail(ctx context.Context, ready func(), fn func(rawEvent)) error {
	err := s.broker.tail(ctx, ready, fn)
	s.done <- err
	return err
}

// A browser that closes the console's live tail ends the broker's tail
// (its consumer, queue or readers) and the handler; nothing is left
// running until the console stops.
func TestConsoleTailEndsWhenTheBrowserLeaves(t *testing.T) {
	for _, name := range []string{"redis", "rabbitmq", "kafka"} {
		t.Run(name, func(t *testing.T) {
			f := fixtures[name](t)
			c := consoleFor(t, f)
			spy := tailSpy{c.broker, make(chan error, 1)}
			c.broker = spy
			srv := httptest.NewServer(c.handler())
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			reqCtx, leave := context.WithCancel(ctx)
			req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, srv.URL+"/api/tail", nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			sc := bufio.NewScanner(res.Body)
			for sc.Scan() && sc.Text() != "event: ready" {
			}
			if err := f.publish(ctx, envelope("inv-t")); err != nil {
				t.Fatal(err)
			}
			for sc.Scan() && sc.Text() != "event: event" {
			}
			if sc.Err() != nil {
				t.Fatalf("no event on the tail: %v", sc.Err())
			}
			leave()
			select {
			case err := <-spy.done:
				if err != nil {
					t.Errorf("tail ended with %v", err)
				}
			case <-ctx.Done():
				t.Fatal("the broker's tail still runs after the browser left")
			}
		})
	}
}

// quickTail is a broker whose tail ends at once, as one does when the bus
// is down and the browser reconnects every few seconds.
type quickTail struct{ broker }

func (quickTail) where() string { return "test" }
func (quickTail) tail(_ context.Context, ready func(), _ func(rawEvent)) error {
	ready()
	return nil
}

type requestMark struct{ _ [64]byte }
type markKey struct{}

// A tail that ended leaves nothing behind: a console open for weeks must
// not keep every request it ever streamed to.
func TestConsoleTailForgetsEndedStreams(t *testing.T) {
	e, _ := testEnv(t)
	c := &console{e: e, loopback: true, broker: quickTail{}}
	h := c.handler()
	const n = 50
	var freed atomic.Int64
	for range n {
		mark := &requestMark{}
		runtime.AddCleanup(mark, func(*atomic.Int64) { freed.Add(1) }, &freed)
		req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/api/tail", nil)
		req = req.WithContext(context.WithValue(req.Context(), markKey{}, mark))
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	deadline := time.Now().Add(10 * time.Second)
	for freed.Load() < n && time.Now().Before(deadline) {
		runtime.GC() // cleanups run after a collection finds the marks unreachable
		time.Sleep(10 * time.Millisecond)
	}
	if got := freed.Load(); got < n {
		t.Errorf("%d of %d ended tail requests are still reachable from the console", n-got, n)
	}
	c.stopTails()
}
