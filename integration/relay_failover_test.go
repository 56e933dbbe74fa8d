package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/aggregate"
	"github.com/eventsource-go/eventsource/bus/bustest"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/repository"
)

func init() {
	helpers["relay-leased"] = relayLeasedHelper
	helpers["outbox-writer"] = outboxWriterHelper
}

// relayBatch is the batch size of the relays the scenarios run: small, so
// that kills land mid-stream and the duplicate bound means something.
const relayBatch = 50

// relayLeaseTTL bounds the failover: short, yet long enough that a holder
// starved of CPU on a loaded CI machine rarely misses a renewal (each miss
// could add a batch of duplicates the test does not allow for).
const relayLeaseTTL = 2 * time.Second

// openRelayStore opens the SQLite file every process of a scenario shares.
func openRelayStore(ctx context.Context, path string) (*sqlite.Store, error) {
	return sqlite.Open(ctx, path, sqlite.WithRegistry(bustest.NewRegistry()))
}

// relayHelperBus is a child's Redis bus: it only publishes.
func relayHelperBus(ctx context.Context) (*redisbus.Bus, error) {
	return redisbus.New(ctx, redisbus.Config{
		URL: os.Getenv("HELPER_REDIS_URL"), StreamPrefix: os.Getenv("HELPER_PREFIX"), Group: "relay",
		Registry: bustest.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
	})
}

// relayLeasedHelper runs a relay that holds the lease "relay" while it
// lives, until it is killed.
func relayLeasedHelper() int {
	ctx := context.Background()
	store, err := openRelayStore(ctx, os.Getenv("HELPER_DB"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b, err := relayHelperBus(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r := repository.NewRelay("relay", store, store, b, repository.WithRelayBatchSize(relayBatch),
		repository.WithRelayLease(store.Lease(), relayLeaseTTL, os.Getenv("HELPER_OWNER")),
		repository.WithRelayBackoff(10*time.Millisecond, 100*time.Millisecond), repository.WithRelayLogger(slog.New(slog.DiscardHandler)))
	if err := r.Run(ctx, 20*time.Millisecond); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// relayEnv is what a relay scenario shares with its children.
type relayEnv struct {
	redis *redisEnv
	path  string
	store *sqlite.Store
	seen  *counter
}

func newRelayEnv(t *testing.T) *relayEnv {
	t.Helper()
	e := &relayEnv{redis: newRedisEnv(t, redisURL(t)), path: filepath.Join(t.TempDir(), "events.db")}
	var err error
	if e.store, err = openRelayStore(t.Context(), e.path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.store.Close() })
	// The check group exists before anything is published, so it sees
	// every entry of the stream.
	e.seen = newCounter()
	subscribe(t, e.redis.open(t, redisbus.Config{Group: "check"}), e.seen)
	return e
}

func (e *relayEnv) helper(t *testing.T, name string, env ...string) (kill func()) {
	cmd := helperCmd(name, append([]string{"HELPER_DB=" + e.path, "HELPER_REDIS_URL=" + e.redis.url, "HELPER_PREFIX=" + e.redis.prefix}, env...)...)
	return startHelper(t, cmd)
}

// stored returns the IDs of every event in the store.
func (e *relayEnv) stored(t *testing.T) []eventsource.Envelope {
	t.Helper()
	var all []eventsource.Envelope
	for env, err := range e.store.ReadAll(t.Context(), 1) {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, env)
	}
	return all
}

// wantAllPublished waits until every stored event was delivered to the
// check group, and returns how many deliveries were duplicates.
func (e *relayEnv) wantAllPublished(t *testing.T) int {
	t.Helper()
	all := e.stored(t)
	waitFor(t, 60*time.Second, fmt.Sprintf("all %d stored events published", len(all)), func() bool {
		_, distinct, _ := e.seen.counts()
		return distinct >= len(all)
	})
	e.seen.mu.Lock()
	defer e.seen.mu.Unlock()
	for _, env := range all {
		if e.seen.seen[env.ID] == 0 {
			t.Fatalf("stored event at position %d never published", env.Position)
		}
	}
	return e.seen.total - len(e.seen.seen)
}

// holder reads who holds the relay's lease from the shared file.
func holder(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var owner string
	err = db.QueryRowContext(t.Context(), "SELECT owner FROM leases WHERE name = 'relay' AND expires_ms > ?", time.Now().UnixMilli()).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return ""
	}
	if err != nil && !isMissingTable(err) {
		t.Fatal(err)
	}
	return owner
}

// isMissingTable: no relay has taken the lease yet.
func isMissingTable(err error) bool { return strings.Contains(err.Error(), "no such table") }

// appendPings appends n Ping events to stream s in one Append.
func appendPings(t *testing.T, store eventstore.Store, stream string, n int) {
	t.Helper()
	envs := make([]eventsource.Envelope, n)
	for i := range envs {
		envs[i] = bustest.NewEnvelope(stream, 0, bustest.Ping{N: i})
	}
	if _, err := store.Append(t.Context(), "BustestAgg-"+stream, eventstore.AnyVersion, envs); err != nil {
		t.Fatal(err)
	}
}

// Two relay processes share a lease; the holder is killed with SIGKILL
// mid-stream. The other takes over within the lease's TTL, every stored
// event is published, and the duplicates are at most the one batch the
// dead holder had in flight.
func TestRelayLeaseFailoverKill9(t *testing.T) {
	e := newRelayEnv(t)
	kills := map[string]func(){
		"a": e.helper(t, "relay-leased", "HELPER_OWNER=a"),
		"b": e.helper(t, "relay-leased", "HELPER_OWNER=b"),
	}
	const chunks, per = 200, 10
	var first string
	killedAt := 0
	for i := range chunks {
		appendPings(t, e.store, "s"+strconv.Itoa(i%16), per)
		if i == chunks/2 {
			waitFor(t, 30*time.Second, "a relay to hold the lease and publish", func() bool {
				_, distinct, _ := e.seen.counts()
				first = holder(t, e.path)
				return first != "" && distinct > 0
			})
			_, killedAt, _ = e.seen.counts()
			kills[first]()
		}
	}
	dups := e.wantAllPublished(t)
	second := holder(t, e.path)
	if second == "" || second == first {
		t.Fatalf("after killing %s the lease is held by %q, want the other relay", first, second)
	}
	t.Logf("killed %s after %d events; %s took over; %d duplicates (batch %d)", first, killedAt, second, dups, relayBatch)
	if dups > relayBatch {
		t.Errorf("%d duplicates, want at most one batch (%d)", dups, relayBatch)
	}
}

// ---- the crash test ------------------------------------------------------

// crashCounter is the aggregate outbox-writer saves: one Ping per command.
type crashCounter struct {
	aggregate.Base
	n int
}

func (*crashCounter) AggregateType() string     { return "BustestAgg" }
func (c *crashCounter) Apply(eventsource.Event) { c.n++ }

// outboxWriterHelper saves aggregates in outbox mode as fast as it can,
// with its relay running beside it, until it is killed.
func outboxWriterHelper() int {
	ctx := context.Background()
	store, err := openRelayStore(ctx, os.Getenv("HELPER_DB"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b, err := relayHelperBus(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	relay := repository.NewRelay("relay", store, store, b, repository.WithRelayBatchSize(relayBatch),
		repository.WithRelayLogger(slog.New(slog.DiscardHandler)))
	go func() { _ = relay.Run(ctx, time.Second) }()
	repo := repository.New(store, nil, func() *crashCounter { return &crashCounter{} }, repository.WithOutbox(relay))
	run := os.Getenv("HELPER_RUN")
	for i := 0; ; i++ {
		c := &crashCounter{}
		c.SetID(fmt.Sprintf("%s-%d", run, i))
		for k := range 1 + i%3 {
			aggregate.Raise(c, bustest.Ping{N: k})
		}
		if err := repo.Save(ctx, c); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
}

// A process saving in outbox mode is killed with SIGKILL at random points,
// many times, between its appends and its relay's publishes; each restart
// resumes from the checkpoint. In the end every stored event is published,
// and duplicates are at most one batch per kill.
func TestRelayCrashBetweenAppendAndPublish(t *testing.T) {
	e := newRelayEnv(t)
	const kills = 12
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for run := range kills {
		before := len(e.stored(t))
		kill := e.helper(t, "outbox-writer", "HELPER_RUN="+strconv.Itoa(run))
		waitFor(t, 30*time.Second, "the writer to store events", func() bool { return len(e.stored(t)) > before })
		// Let it run a random while, then kill it wherever it is.
		deadline := time.Now().Add(time.Duration(rng.IntN(150)) * time.Millisecond)
		waitFor(t, time.Second, "a random point", func() bool { return time.Now().After(deadline) })
		kill()
	}
	// The last restart, run to completion: it publishes what the last
	// kill left.
	kill := e.helper(t, "outbox-writer", "HELPER_RUN=final")
	waitFor(t, 30*time.Second, "the final writer to publish", func() bool { _, d, _ := e.seen.counts(); return d > 0 })
	kill()
	b := e.redis.open(t, redisbus.Config{Group: "relay"})
	r := repository.NewRelay("relay", e.store, e.store, b, repository.WithRelayBatchSize(relayBatch))
	if _, err := r.PublishPending(t.Context()); err != nil {
		t.Fatal(err)
	}
	dups := e.wantAllPublished(t)
	total := len(e.stored(t))
	t.Logf("%d kills, %d events stored, %d duplicates", kills+1, total, dups)
	if limit := (kills + 1) * relayBatch; dups > limit {
		t.Errorf("%d duplicates, want at most one batch per kill (%d)", dups, limit)
	}
}
