package integration

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
)

type redisEnv struct {
	url    string
	prefix string
	raw    *goredis.Client
}

// newRedisEnv gives a test a unique stream prefix whose keys are deleted
// when it ends.
func newRedisEnv(t *testing.T, url string) *redisEnv {
	t.Helper()
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	e := &redisEnv{url: url, prefix: uniquePrefix(t), raw: goredis.NewClient(opts)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := redisbus.DeleteKeys(ctx, e.raw, e.prefix); err != nil {
			t.Errorf("deleting keys of %s: %v", e.prefix, err)
		}
		_ = e.raw.Close()
	})
	return e
}

func (e *redisEnv) open(t *testing.T, cfg redisbus.Config) *redisbus.Bus {
	t.Helper()
	cfg.URL, cfg.StreamPrefix = e.url, e.prefix
	if cfg.Registry == nil {
		cfg.Registry = bustest.NewRegistry()
	}
	if cfg.Block == 0 {
		cfg.Block = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := redisbus.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBus(t, b) })
	return b
}

// Scenario 1: two members of one group share 10,000 events, each handled
// once in total; a second group gets all 10,000.
func TestRedisGroupsShareTenThousand(t *testing.T) {
	env := newRedisEnv(t, redisURL(t))
	groupsShareTenThousand(t, func(group string) brokerBus { return env.open(t, redisbus.Config{Group: group}) }, nil)
}

// Scenario 2: a consumer process killed (SIGKILL) with events in flight;
// a surviving member claims them after ClaimIdle and handles them.
func TestRedisKilledConsumerReclaimed(t *testing.T) {
	env := newRedisEnv(t, redisURL(t))
	pub := env.open(t, redisbus.Config{Group: "publisher"})
	const n = 300
	evs := events(n, 10, "kill")
	publishAll(t, pub, evs, 100)

	cmd := helperCmd("redis-consumer",
		"HELPER_REDIS_URL="+env.url, "HELPER_PREFIX="+env.prefix, "HELPER_GROUP=workers", "HELPER_CONSUMER=doomed")
	cmd.Stdout = os.Stderr
	kill := startHelper(t, cmd)
	ctx := context.Background()
	events := "{" + env.prefix + "}:events"
	waitFor(t, 30*time.Second, "the doomed consumer to hold every event", func() bool {
		p, err := env.raw.XPending(ctx, events, "workers").Result()
		return err == nil && p.Consumers["doomed"] == n
	})
	kill()

	survivor := env.open(t, redisbus.Config{Group: "workers", ClaimIdle: 500 * time.Millisecond, ClaimInterval: 100 * time.Millisecond,
		Retry: consumer.RetryPolicy{MaxRetries: 5, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Multiplier: 2}})
	c := newCounter()
	subscribe(t, survivor, c)
	waitFor(t, 30*time.Second, "the survivor to handle every event", func() bool { tot, _, _ := c.counts(); return tot >= n })
	closeBus(t, survivor)
	assertExactlyOnce(t, "survivor", evs, mergeSeen(c))
	st := survivor.Stats()
	if st.Reclaimed != n || st.Handled != n || st.DeadLettered != 0 {
		t.Errorf("reclaimed %d handled %d dead %d; want %d, %d, 0", st.Reclaimed, st.Handled, st.DeadLettered, n, n)
	}
	if p, err := env.raw.XPending(ctx, events, "workers").Result(); err != nil || p.Count != 0 {
		t.Errorf("pending after reclaim: %+v %v", p, err)
	}
}

// redisConsumerHelper is the child process of the kill scenario: it reads
// and never acknowledges, its handlers blocking until it is killed.
func redisConsumerHelper() int {
	ctx := context.Background()
	b, err := redisbus.New(ctx, redisbus.Config{
		URL: os.Getenv("HELPER_REDIS_URL"), StreamPrefix: os.Getenv("HELPER_PREFIX"),
		Group: os.Getenv("HELPER_GROUP"), Consumer: os.Getenv("HELPER_CONSUMER"),
		Registry: bustest.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
	})
	return holdDeliveries(b, err)
}

// Scenario 3: Redis restarted mid-stream. Nothing published before is
// lost; publishing and consuming resume on their own.
func TestRedisRestartMidStream(t *testing.T) {
	srv := startRedisServer(t)
	env := newRedisEnv(t, srv.url())
	b := env.open(t, redisbus.Config{Group: "g", ClaimIdle: time.Second, ClaimInterval: 100 * time.Millisecond,
		Retry: consumer.RetryPolicy{MaxRetries: 5, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Multiplier: 2}})
	c := newCounter()
	if _, err := b.SubscribeAll(c); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	const half = 1000
	before, after := events(half, 20, "before"), events(half, 20, "after")
	publishAll(t, b, before, 50)
	waitFor(t, 30*time.Second, "consuming to start", func() bool { tot, _, _ := c.counts(); return tot >= 100 })

	srv.kill(t)
	srv.start(t)

	// Publish fails while Redis is down or loading; the caller retries.
	failures := publishRetrying(t, b, after, 50)
	all := append(before, after...)
	waitFor(t, time.Minute, "every event, before and after the restart", func() bool { _, d, _ := c.counts(); return d >= len(all) })
	closeBus(t, b)
	lost := countLost(c, all)
	_, distinct, dups := c.counts()
	t.Logf("published %d, handled %d distinct, %d duplicate deliveries, %d failed publish attempts, %d reconnects",
		len(all), distinct, dups, failures, b.Stats().Reconnects)
	if lost != 0 || distinct != len(all) {
		t.Errorf("%d events lost, %d distinct of %d", lost, distinct, len(all))
	}
	if b.Stats().Reconnects == 0 {
		t.Errorf("Stats.Reconnects = 0 after a restart")
	}
}

// redisServer is a redis-server of the test's own, with AOF, so that it
// can be killed and restarted without touching the shared one.
type redisServer struct {
	bin, dir string
	port     int
	cmd      *exec.Cmd
}

func startRedisServer(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(t, "redis-server is not on PATH; install Redis to run the restart scenario")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	s := &redisServer{bin: bin, dir: t.TempDir(), port: port}
	s.start(t)
	t.Cleanup(func() {
		if s.cmd != nil {
			_ = s.cmd.Process.Kill()
			_ = s.cmd.Wait()
		}
	})
	return s
}

func (s *redisServer) url() string { return "redis://127.0.0.1:" + strconv.Itoa(s.port) + "/0" }

func (s *redisServer) start(t *testing.T) {
	t.Helper()
	s.cmd = exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"))
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(s.port), MaxRetries: -1})
	defer c.Close()
	waitFor(t, 20*time.Second, "redis-server to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err() == nil
	})
}

// kill stops the server by PID with SIGKILL: no shutdown, only what the
// AOF already holds survives.
func (s *redisServer) kill(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Scenario 4: a handler that always fails. Each event reaches the group's
// dead-letter stream after exactly MaxRetries attempts, with the reason;
// once the handler is fixed, replay delivers each once, to that group only.
func TestRedisDeadLetterAfterMaxRetriesThenReplay(t *testing.T) {
	env := newRedisEnv(t, redisURL(t))
	deadLetterThenReplay(t, deadLetterCase{
		open: func(group string) brokerBus { return env.open(t, redisbus.Config{Group: group, Retry: scenarioRetry}) },
		left: func(ctx context.Context) int64 {
			k, _ := env.raw.XLen(ctx, "{"+env.prefix+"}:dlq:billing").Result()
			return k
		},
	})
}

// Scenario 5: garbage bytes, an unknown event type and an entry with no
// envelope, XADDed by hand, are dead-lettered with the right reason; the
// good events around them are handled.
func TestRedisBadInputDeadLettered(t *testing.T) {
	env := newRedisEnv(t, redisURL(t))
	badInputDeadLettered(t, badInputCase{
		open: func() brokerBus { return env.open(t, redisbus.Config{Group: "g"}) },
		inject: func(ctx context.Context, unknownID string) (ids [3]string) {
			stream := "{" + env.prefix + "}:events"
			for i, values := range [][]any{
				{"envelope", garbageBytes},
				{"type", "NoSuchType", "agg_id", "x", "envelope", string(unknownTypeBody(unknownID))},
				{"unrelated", "fields only"},
			} {
				id, err := env.raw.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: values}).Result()
				if err != nil {
					t.Fatal(err)
				}
				ids[i] = id
			}
			return ids
		},
	})
}
