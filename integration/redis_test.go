package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
)

// counter counts deliveries per event ID, so duplicates show.
type counter struct {
	mu    sync.Mutex
	seen  map[uuid.UUID]int
	total int
	fail  func(eventsource.Envelope) error
}

func newCounter() *counter { return &counter{seen: map[uuid.UUID]int{}} }

func (c *counter) Handle(_ context.Context, env eventsource.Envelope) error {
	if c.fail != nil {
		if err := c.fail(env); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.seen[env.ID]++
	c.total++
	c.mu.Unlock()
	return nil
}

// counts returns deliveries, distinct events and duplicate deliveries.
func (c *counter) counts() (total, distinct, dups int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total, len(c.seen), c.total - len(c.seen)
}

func mergeSeen(cs ...*counter) map[uuid.UUID]int {
	out := map[uuid.UUID]int{}
	for _, c := range cs {
		c.mu.Lock()
		for id, n := range c.seen {
			out[id] += n
		}
		c.mu.Unlock()
	}
	return out
}

// assertExactlyOnce fails unless every published event was handled once
// in seen, and nothing else was.
func assertExactlyOnce(t *testing.T, what string, published []eventsource.Envelope, seen map[uuid.UUID]int) {
	t.Helper()
	missing, dups := 0, 0
	for _, e := range published {
		switch n := seen[e.ID]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	if missing != 0 || dups != 0 || len(seen) != len(published) {
		t.Errorf("%s: %d published, %d distinct handled, %d missing, %d duplicates", what, len(published), len(seen), missing, dups)
	}
}

func events(n, aggregates int, prefix string) []eventsource.Envelope {
	out := make([]eventsource.Envelope, n)
	for i := range n {
		out[i] = bustest.NewEnvelope(fmt.Sprintf("%s-%d", prefix, i%aggregates), int64(i/aggregates+1), bustest.Ping{N: i})
	}
	return out
}

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
		iter := e.raw.Scan(ctx, 0, redisbus.KeyPattern(e.prefix), 100).Iterator()
		for iter.Next(ctx) {
			e.raw.Del(ctx, iter.Val())
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

func closeBus(t *testing.T, b bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func publishAll(t *testing.T, b bus.Bus, evs []eventsource.Envelope, batch int) {
	t.Helper()
	ctx := context.Background()
	for start := 0; start < len(evs); start += batch {
		if err := b.Publish(ctx, evs[start:min(start+batch, len(evs))]...); err != nil {
			t.Fatal(err)
		}
	}
}

// Scenario 1: two members of one group share 10,000 events, each handled
// once in total; a second group gets all 10,000.
func TestRedisGroupsShareTenThousand(t *testing.T) {
	env := newRedisEnv(t, redisURL(t))
	a1, a2 := env.open(t, redisbus.Config{Group: "a"}), env.open(t, redisbus.Config{Group: "a"})
	bb := env.open(t, redisbus.Config{Group: "b"})
	ca1, ca2, cb := newCounter(), newCounter(), newCounter()
	for _, x := range []struct {
		b *redisbus.Bus
		c *counter
	}{{a1, ca1}, {a2, ca2}, {bb, cb}} {
		if _, err := x.b.SubscribeAll(x.c); err != nil {
			t.Fatal(err)
		}
	}
	const n = 10_000
	evs := events(n, 100, "share")
	publishAll(t, a1, evs, 200)
	waitFor(t, time.Minute, "both groups to handle 10,000", func() bool {
		t1, _, _ := ca1.counts()
		t2, _, _ := ca2.counts()
		tb, _, _ := cb.counts()
		return t1+t2 >= n && tb >= n
	})
	for _, b := range []*redisbus.Bus{a1, a2, bb} {
		closeBus(t, b)
	}
	assertExactlyOnce(t, "group a (two members)", evs, mergeSeen(ca1, ca2))
	assertExactlyOnce(t, "group b", evs, mergeSeen(cb))
	t1, _, _ := ca1.counts()
	t2, _, _ := ca2.counts()
	t.Logf("group a split: %d + %d", t1, t2)
	if t1 == 0 || t2 == 0 {
		t.Errorf("one member of group a handled nothing (%d, %d): the group did not share", t1, t2)
	}
	if st := a1.Stats(); st.Published != n {
		t.Errorf("published %d", st.Published)
	}
	if h := a1.Stats().Handled + a2.Stats().Handled; h != n {
		t.Errorf("group a acked %d, want %d", h, n)
	}
}

// Scenario 2: a consumer process killed (SIGKILL) with events in flight;
// a surviving member claims them after ClaimIdle and handles them.
func TestRedisKilledConsumerReclaimed(t *testing.T) {
	env := newRedisEnv(t, redisURL(t))
	pub := env.open(t, redisbus.Config{Group: "publisher"})
	const n = 300
	evs := events(n, 10, "kill")
	publishAll(t, pub, evs, 100)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=redis-consumer",
		"HELPER_REDIS_URL="+env.url, "HELPER_PREFIX="+env.prefix, "HELPER_GROUP=workers", "HELPER_CONSUMER=doomed")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	ctx := context.Background()
	events := "{" + env.prefix + "}:events"
	waitFor(t, 30*time.Second, "the doomed consumer to hold every event", func() bool {
		p, err := env.raw.XPending(ctx, events, "workers").Result()
		return err == nil && p.Consumers["doomed"] == n
	})
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed = true

	survivor := env.open(t, redisbus.Config{Group: "workers", ClaimIdle: 500 * time.Millisecond, ClaimInterval: 100 * time.Millisecond,
		Retry: consumer.RetryPolicy{MaxRetries: 5, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Multiplier: 2}})
	c := newCounter()
	if _, err := survivor.SubscribeAll(c); err != nil {
		t.Fatal(err)
	}
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
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	block := make(chan struct{})
	if _, err := b.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		<-block
		return nil
	})); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	<-block // until SIGKILL
	return 0
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
	const half = 1000
	before, after := events(half, 20, "before"), events(half, 20, "after")
	publishAll(t, b, before, 50)
	waitFor(t, 30*time.Second, "consuming to start", func() bool { tot, _, _ := c.counts(); return tot >= 100 })

	srv.kill(t)
	srv.start(t)

	// Publish fails while Redis is down or loading; the caller retries.
	ctx := context.Background()
	failures := 0
	for start := 0; start < half; start += 50 {
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := b.Publish(ctx, after[start:start+50]...)
			if err == nil {
				break
			}
			failures++
			if time.Now().After(deadline) {
				t.Fatalf("publishing did not resume: %v", err)
			}
			time.Sleep(20 * time.Millisecond) // retry interval, bounded by the deadline
		}
	}
	all := append(before, after...)
	waitFor(t, time.Minute, "every event, before and after the restart", func() bool { _, d, _ := c.counts(); return d >= len(all) })
	closeBus(t, b)
	seen := mergeSeen(c)
	lost := 0
	for _, e := range all {
		if seen[e.ID] == 0 {
			lost++
		}
	}
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
	const maxRetries, n = 4, 10
	retry := consumer.RetryPolicy{MaxRetries: maxRetries, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Multiplier: 2}
	b := env.open(t, redisbus.Config{Group: "billing", Retry: retry})
	other := env.open(t, redisbus.Config{Group: "audit", Retry: retry})
	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	attempts := map[uuid.UUID]int{}
	c := newCounter()
	c.fail = func(e eventsource.Envelope) error {
		mu.Lock()
		attempts[e.ID]++
		mu.Unlock()
		if broken.Load() {
			return errors.New("payment provider down")
		}
		return nil
	}
	audit := newCounter()
	if _, err := b.SubscribeAll(c, bus.WithName("charge")); err != nil {
		t.Fatal(err)
	}
	if _, err := other.SubscribeAll(audit); err != nil {
		t.Fatal(err)
	}
	evs := events(n, 3, "dl")
	publishAll(t, b, evs, n)
	admin := b.DeadLetters()
	ctx := context.Background()
	waitFor(t, 30*time.Second, "every event dead-lettered", func() bool { k, _ := admin.Count(ctx); return k == n })
	mu.Lock()
	for _, e := range evs {
		if attempts[e.ID] != maxRetries {
			t.Errorf("event %s attempted %d times before dead-lettering, want %d", e.ID, attempts[e.ID], maxRetries)
		}
	}
	mu.Unlock()
	recs, err := admin.List(ctx, "", 100)
	if err != nil || len(recs) != n {
		t.Fatalf("List = %d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if r.Reason != consumer.ReasonMaxRetries || r.Attempts != maxRetries || r.Group != "billing" || r.Error == "" || len(r.Body) == 0 {
			t.Errorf("record %+v", r)
		}
	}
	if k, _ := other.DeadLetters().Count(ctx); k != 0 {
		t.Errorf("audit group has %d dead letters", k)
	}

	broken.Store(false)
	if k, err := admin.ReplayAll(ctx); err != nil || k != n {
		t.Fatalf("ReplayAll = %d, %v", k, err)
	}
	waitFor(t, 30*time.Second, "replayed events handled", func() bool { tot, _, _ := c.counts(); return tot >= n })
	waitFor(t, 30*time.Second, "audit handled its copies", func() bool { tot, _, _ := audit.counts(); return tot >= n })
	closeBus(t, b)
	closeBus(t, other)
	assertExactlyOnce(t, "billing after replay", evs, mergeSeen(c))
	assertExactlyOnce(t, "audit (not replayed to)", evs, mergeSeen(audit))
	if k, _ := env.raw.XLen(ctx, "{"+env.prefix+"}:dlq:billing").Result(); k != 0 {
		t.Errorf("%d dead letters left after replay", k)
	}
	if st := b.Stats(); st.DeadLettered != n || st.Retries != n*(maxRetries-1) {
		t.Errorf("stats dead %d retries %d; want %d, %d", st.DeadLettered, st.Retries, n, n*(maxRetries-1))
	}
}

// Scenario 5: garbage bytes and an unknown event type, XADDed by hand, are
// dead-lettered with the right reason; the good events around them are
// handled.
func TestRedisBadInputDeadLettered(t *testing.T) {
	env := newRedisEnv(t, redisURL(t))
	b := env.open(t, redisbus.Config{Group: "g"})
	c := newCounter()
	if _, err := b.SubscribeAll(c); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stream := "{" + env.prefix + "}:events"
	first := events(1, 1, "good")
	publishAll(t, b, first, 1)
	unknownID := uuid.Must(uuid.NewV7()).String()
	garbage := "\x00\xffnot an envelope{"
	var ids []string
	for _, values := range [][]any{
		{"envelope", garbage},
		{"type", "NoSuchType", "agg_id", "x", "envelope",
			`{"id":"` + unknownID + `","type":"NoSuchType","aggregate_id":"x","version":1,"occurred_at":"2026-01-01T00:00:00Z","data":{"a":1}}`},
		{"unrelated", "fields only"},
	} {
		id, err := env.raw.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: values}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	next := bustest.NewEnvelope("good-0", 2, bustest.Ping{N: 2})
	publishAll(t, b, []eventsource.Envelope{next}, 1)
	admin := b.DeadLetters()
	waitFor(t, 30*time.Second, "three dead letters and two good events", func() bool {
		k, _ := admin.Count(ctx)
		tot, _, _ := c.counts()
		return k == 3 && tot == 2
	})
	recs, err := admin.List(ctx, "", 10)
	if err != nil || len(recs) != 3 {
		t.Fatalf("List = %v, %v", recs, err)
	}
	// Dead letters of different aggregates come from different workers, in
	// any order: match them by the entry they came from.
	bySource := map[string]consumer.DeadLetter{}
	for _, r := range recs {
		bySource[r.SourceID] = r
	}
	want := []consumer.Reason{consumer.ReasonMalformed, consumer.ReasonUnknownType, consumer.ReasonMalformed}
	for i, id := range ids {
		if r := bySource[id]; r.Reason != want[i] {
			t.Errorf("entry %d (%s): reason %q, want %q (%+v)", i, id, r.Reason, want[i], r)
		}
	}
	if r := bySource[ids[0]]; string(r.Body) != garbage {
		t.Errorf("garbage bytes not kept: %q", r.Body)
	}
	if r := bySource[ids[1]]; r.EventType != "NoSuchType" || r.AggregateID != "x" || r.Error == "" {
		t.Errorf("unknown-type record %+v", r)
	}
	closeBus(t, b)
	assertExactlyOnce(t, "good events", append(first, next), mergeSeen(c))
	if st := b.Stats(); st.DeadLettered != 3 || st.Handled != 2 {
		t.Errorf("stats dead %d handled %d", st.DeadLettered, st.Handled)
	}
}
