package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"

	"github.com/eventsource-go/eventsource/internal/testenv"
)

// helperEnv, when set, makes the test binary run the named helper process
// instead of the tests (scenarios that kill a consumer run it as a child).
const helperEnv = "EVENTSOURCE_INTEGRATION_HELPER"

// helpers are the child processes the tests can start, by name.
var helpers = map[string]func() int{
	"redis-consumer": redisConsumerHelper,
}

// brokers holds what the tests start once for the whole package: the
// containers, terminated by TestMain.
var brokers harness

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		h, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(h())
	}
	code := m.Run()
	brokers.terminate()
	os.Exit(code)
}

type harness struct {
	redisOnce sync.Once
	redisURL  string
	redisErr  string // why there is no Redis, when there is none

	mu      sync.Mutex
	cleanup func()
}

// redisURL returns the Redis to test against: EVENTSOURCE_REDIS_URL, or a
// container when a Docker engine answers. Otherwise the test is skipped,
// or fails under EVENTSOURCE_REQUIRE_BROKERS=1.
func redisURL(t *testing.T) string {
	t.Helper()
	if u := os.Getenv("EVENTSOURCE_REDIS_URL"); u != "" {
		return u
	}
	brokers.redisOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := dockerPing(ctx); err != nil {
			brokers.redisErr = "no Docker engine answered (" + err.Error() + ")"
			return
		}
		ctx, cancel = context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		ctr, err := tcredis.Run(ctx, "redis:7-alpine")
		if err != nil {
			brokers.redisErr = "starting a Redis container failed: " + err.Error()
			return
		}
		brokers.onTerminate(func() { _ = testcontainers.TerminateContainer(ctr) })
		brokers.redisURL, err = ctr.ConnectionString(ctx)
		if err != nil {
			brokers.redisErr = "Redis container has no address: " + err.Error()
		}
	})
	if brokers.redisURL == "" {
		unavailable(t, "EVENTSOURCE_REDIS_URL is not set and "+brokers.redisErr+
			"; set EVENTSOURCE_REDIS_URL=redis://127.0.0.1:6379/0 or start Docker to run the Redis integration tests")
	}
	return brokers.redisURL
}

// unavailable skips, or fails when CI requires every broker.
func unavailable(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv(testenv.RequireVar) == "1" {
		t.Fatalf("%s (%s=1 requires it)", msg, testenv.RequireVar)
	}
	t.Skip(msg)
}

func (h *harness) onTerminate(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev := h.cleanup
	h.cleanup = func() {
		f()
		if prev != nil {
			prev()
		}
	}
}

func (h *harness) terminate() {
	h.mu.Lock()
	f := h.cleanup
	h.mu.Unlock()
	if f != nil {
		f()
	}
}

// dockerPing asks the Docker engine for /_ping, giving up when ctx ends:
// testcontainers' own discovery retries for much longer than a test run
// without Docker should wait.
func dockerPing(ctx context.Context) error {
	hosts := []string{os.Getenv("DOCKER_HOST")}
	if hosts[0] == "" {
		hosts = []string{"unix:///var/run/docker.sock"}
		if home, err := os.UserHomeDir(); err == nil {
			hosts = append(hosts, "unix://"+filepath.Join(home, ".docker", "run", "docker.sock"))
		}
	}
	var last error
	for _, host := range hosts {
		if last = pingHost(ctx, host); last == nil {
			return nil
		}
	}
	return last
}

func pingHost(ctx context.Context, host string) error {
	u, err := url.Parse(host)
	if err != nil {
		return err
	}
	var dial func(ctx context.Context, _, _ string) (net.Conn, error)
	switch u.Scheme {
	case "unix":
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", u.Path)
		}
	case "tcp":
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", u.Host)
		}
	default:
		return fmt.Errorf("DOCKER_HOST scheme %q not probed", u.Scheme)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dial}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("docker /_ping: %s", resp.Status)
	}
	return nil
}

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// uniquePrefix names a test's streams.
func uniquePrefix(t *testing.T) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return fmt.Sprintf("it-%s-%d", name, time.Now().UnixNano())
}
