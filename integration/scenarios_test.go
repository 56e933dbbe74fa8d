package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/internal/testenv"
)

// The scenarios every broker bus runs the same way live here; each
// broker's test file calls them with its own way of opening a bus and of
// writing raw bytes to the broker.

// brokerBus is what the shared scenarios need of a broker-backed bus.
type brokerBus interface {
	bus.Bus
	DeadLetters() consumer.Admin
}

// scenarioRetry is the retry policy of the dead-letter scenario.
var scenarioRetry = consumer.RetryPolicy{MaxRetries: 4, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Multiplier: 2}

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

// attempts is the handler of the dead-letter scenarios: a counter that
// records every attempt per event and fails while failing says so.
type attempts struct {
	*counter
	mu sync.Mutex
	n  map[uuid.UUID]int
}

func newAttempts(failing func(eventsource.Envelope) error) *attempts {
	a := &attempts{counter: newCounter(), n: map[uuid.UUID]int{}}
	a.fail = func(e eventsource.Envelope) error {
		a.mu.Lock()
		a.n[e.ID]++
		a.mu.Unlock()
		return failing(e)
	}
	return a
}

// of returns how many times the event was attempted.
func (a *attempts) of(id uuid.UUID) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[id]
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
	missing, dups := missingAndDups(published, seen)
	if missing != 0 || dups != 0 || len(seen) != len(published) {
		t.Errorf("%s: %d published, %d distinct handled, %d missing, %d duplicates", what, len(published), len(seen), missing, dups)
	}
}

// missingAndDups counts the published events seen never handled, and
// the deliveries beyond the first of the others.
func missingAndDups(published []eventsource.Envelope, seen map[uuid.UUID]int) (missing, dups int) {
	for _, e := range published {
		switch n := seen[e.ID]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	return missing, dups
}

// holdDeliveries is the end of the child processes of the kill
// scenarios: given the bus they opened, they take deliveries and never
// acknowledge them, their handlers blocking until they are killed.
func holdDeliveries(b bus.Bus, err error) int {
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
	if err := b.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	<-block // until SIGKILL
	return 0
}

// countLost counts the events c never handled.
func countLost(c *counter, evs []eventsource.Envelope) int {
	seen := mergeSeen(c)
	k := 0
	for _, e := range evs {
		if seen[e.ID] == 0 {
			k++
		}
	}
	return k
}

func events(n, aggregates int, prefix string) []eventsource.Envelope {
	out := make([]eventsource.Envelope, n)
	for i := range n {
		out[i] = bustest.NewEnvelope(fmt.Sprintf("%s-%d", prefix, i%aggregates), int64(i/aggregates+1), bustest.Ping{N: i})
	}
	return out
}

func closeBus(t *testing.T, b bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func subscribe(t *testing.T, b bus.Bus, h bus.Handler, opts ...bus.SubscribeOption) {
	t.Helper()
	if _, err := b.SubscribeAll(h, opts...); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
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

// publishRetrying publishes evs in batches while the broker comes back,
// retrying each batch for up to 30s, and returns the failed attempts.
func publishRetrying(t *testing.T, b bus.Bus, evs []eventsource.Envelope, batch int) (failures int) {
	t.Helper()
	ctx := context.Background()
	for start := 0; start < len(evs); start += batch {
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := b.Publish(ctx, evs[start:min(start+batch, len(evs))]...)
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
	return failures
}

// helperCmd prepares the test binary to run the named helper process
// (see TestMain) with the extra environment given.
func helperCmd(name string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+name), env...)
	return cmd
}

// startHelper starts cmd and returns what kills it with SIGKILL; if the
// test ends first, cleanup kills it. A failed test logs what the helper
// wrote to stderr: its own error is often the reason.
func startHelper(t *testing.T, cmd *exec.Cmd) (kill func()) {
	t.Helper()
	stderr := &testenv.Buffer{}
	if cmd.Stderr == nil {
		cmd.Stderr = stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if out := stderr.String(); t.Failed() && out != "" {
			t.Logf("helper %d wrote to stderr:\n%s", cmd.Process.Pid, out)
		}
	})
	return func() {
		t.Helper()
		if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		killed = true
	}
}

// groupsShareTenThousand: two members of one group share 10,000 events,
// each handled once in total; a second group gets all 10,000. open opens
// a member of group; more checks what a broker adds.
func groupsShareTenThousand(t *testing.T, open func(group string) brokerBus, more func(a1, a2, bb brokerBus)) {
	a1, a2 := open("a"), open("a")
	bb := open("b")
	ca1, ca2, cb := newCounter(), newCounter(), newCounter()
	subscribe(t, a1, ca1)
	subscribe(t, a2, ca2)
	subscribe(t, bb, cb)
	const n = 10_000
	evs := events(n, 100, "share")
	publishAll(t, a1, evs, 200)
	waitFor(t, time.Minute, "both groups to handle 10,000", func() bool {
		t1, _, _ := ca1.counts()
		t2, _, _ := ca2.counts()
		tb, _, _ := cb.counts()
		return t1+t2 >= n && tb >= n
	})
	for _, b := range []brokerBus{a1, a2, bb} {
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
	if more != nil {
		more(a1, a2, bb)
	}
}

// deadLetterCase is what a broker gives deadLetterThenReplay.
type deadLetterCase struct {
	// open opens a member of group whose retry policy is scenarioRetry.
	open func(group string) brokerBus
	// recordsHandlers: the broker's records name the handlers that failed.
	recordsHandlers bool
	// left returns what is left in the billing group's dead letters, read
	// from the broker itself.
	left func(ctx context.Context) int64
	// more checks what a broker adds, once both buses are closed.
	more func(billing, audit brokerBus)
}

// deadLetterThenReplay: a handler that always fails. Each event reaches
// the group's dead letters after exactly MaxRetries attempts, with the
// reason; the other group is not affected; once the handler is fixed,
// replay delivers each once, to that group only.
func deadLetterThenReplay(t *testing.T, dc deadLetterCase) {
	maxRetries, n := scenarioRetry.MaxRetries, 10
	b := dc.open("billing")
	other := dc.open("audit")
	var broken atomic.Bool
	broken.Store(true)
	c := newAttempts(func(eventsource.Envelope) error {
		if broken.Load() {
			return errors.New("payment provider down")
		}
		return nil
	})
	audit := newCounter()
	subscribe(t, b, c, bus.WithName("charge"))
	subscribe(t, other, audit)
	evs := events(n, 3, "dl")
	publishAll(t, b, evs, n)
	admin := b.DeadLetters()
	ctx := context.Background()
	waitFor(t, 30*time.Second, "every event dead-lettered", func() bool { k, _ := admin.Count(ctx); return k == int64(n) })
	waitFor(t, 30*time.Second, "audit to handle its copies", func() bool { tot, _, _ := audit.counts(); return tot >= n })
	for _, e := range evs {
		if k := c.of(e.ID); k != maxRetries {
			t.Errorf("event %s attempted %d times before dead-lettering, want %d", e.ID, k, maxRetries)
		}
	}
	recs, err := admin.List(ctx, "", 100)
	if err != nil || len(recs) != n {
		t.Fatalf("List = %d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if r.Reason != consumer.ReasonMaxRetries || r.Attempts != maxRetries || r.Group != "billing" || r.Error == "" || len(r.Body) == 0 ||
			dc.recordsHandlers && (len(r.Handlers) != 1 || r.Handlers[0] != "charge") {
			t.Errorf("record %+v", r)
		}
	}
	if k, _ := other.DeadLetters().Count(ctx); k != 0 {
		t.Errorf("audit group has %d dead letters", k)
	}
	if tot, _, _ := audit.counts(); tot != n {
		t.Errorf("audit handled %d, want %d: the retries reached the other group", tot, n)
	}

	broken.Store(false)
	if k, err := admin.ReplayAll(ctx); err != nil || k != n {
		t.Fatalf("ReplayAll = %d, %v", k, err)
	}
	waitFor(t, 30*time.Second, "replayed events handled", func() bool { tot, _, _ := c.counts(); return tot >= n })
	closeBus(t, b)
	closeBus(t, other)
	assertExactlyOnce(t, "billing after replay", evs, mergeSeen(c.counter))
	assertExactlyOnce(t, "audit (not replayed to)", evs, mergeSeen(audit))
	if k := dc.left(ctx); k != 0 {
		t.Errorf("%d dead letters left after replay", k)
	}
	if st := b.Stats(); st.DeadLettered != uint64(n) || st.Retries != uint64(n*(maxRetries-1)) {
		t.Errorf("stats dead %d retries %d; want %d, %d", st.DeadLettered, st.Retries, n, n*(maxRetries-1))
	}
	if dc.more != nil {
		dc.more(b, other)
	}
}

// garbageBytes is what the bad-input scenario writes as an event.
const garbageBytes = "\x00\xffnot an envelope{"

// unknownTypeBody is a well-formed envelope of a type nobody registered.
func unknownTypeBody(id string) []byte {
	return []byte(`{"id":"` + id + `","type":"NoSuchType","aggregate_id":"x","version":1,"occurred_at":"2026-01-01T00:00:00Z","data":{"a":1}}`)
}

// badInputCase is what a broker gives badInputDeadLettered.
type badInputCase struct {
	// open opens the bus of group "g".
	open func() brokerBus
	// inject writes to the broker, by hand, garbageBytes, an event of type
	// NoSuchType (aggregate "x") whose body is unknownTypeBody(unknownID),
	// and a record that is no envelope at all, and returns the source IDs
	// their dead letters will carry, in that order.
	inject func(ctx context.Context, unknownID string) [3]string
	// record checks what a broker adds to the i-th record.
	record func(i int, r consumer.DeadLetter, unknownID string) error
	// more checks what a broker adds, once the bus is closed.
	more func(b brokerBus)
}

// badInputDeadLettered: garbage bytes, an unknown event type and a record
// with no envelope, written raw to the broker, are dead-lettered with the
// right reason; the good events around them are handled.
func badInputDeadLettered(t *testing.T, bc badInputCase) {
	b := bc.open()
	c := newCounter()
	subscribe(t, b, c)
	ctx := context.Background()
	first := events(1, 1, "good")
	publishAll(t, b, first, 1)
	unknownID := uuid.Must(uuid.NewV7()).String()
	ids := bc.inject(ctx, unknownID)
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
	// Dead letters of different aggregates may come from different
	// workers, in any order: match them by the entry they came from.
	bySource := map[string]consumer.DeadLetter{}
	for _, r := range recs {
		bySource[r.SourceID] = r
	}
	want := [3]consumer.Reason{consumer.ReasonMalformed, consumer.ReasonUnknownType, consumer.ReasonMalformed}
	for i, id := range ids {
		r := bySource[id]
		if r.Reason != want[i] {
			t.Errorf("entry %d (%s): reason %q, want %q (%+v)", i, id, r.Reason, want[i], r)
		}
		if bc.record != nil {
			if err := bc.record(i, r, unknownID); err != nil {
				t.Errorf("entry %d (%s): %v (%+v)", i, id, err, r)
			}
		}
	}
	if r := bySource[ids[0]]; string(r.Body) != garbageBytes {
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
	if bc.more != nil {
		bc.more(b)
	}
}
