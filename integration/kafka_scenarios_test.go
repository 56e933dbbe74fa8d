package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
	kafkabus "github.com/eventsource-go/eventsource/bus/kafka"
)

// Scenario 1: two members of one group on a topic with 6 partitions share
// 10,000 events; the second member joins mid-stream, so the partitions are
// rebalanced while events flow. Every event is handled; a duplicate can
// only come from an event still running when its partition was let go
// (Abandoned), and is counted. A second group gets all 10,000, once each.
func TestKafkaGroupsShareTenThousand(t *testing.T) {
	env := newKafkaEnv(t, kafkaBrokers(t))
	pub := env.open(t, kafkabus.Config{Group: "publisher"})
	a1 := env.open(t, kafkabus.Config{Group: "a"})
	bb := env.open(t, kafkabus.Config{Group: "b"})
	ca1, ca2, cb := newCounter(), newCounter(), newCounter()
	if _, err := a1.SubscribeAll(ca1); err != nil {
		t.Fatal(err)
	}
	if _, err := bb.SubscribeAll(cb); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, a1)
	bustest.Start(t, bb)
	const n = 10_000
	evs := events(n, 100, "share")
	publishAll(t, pub, evs[:n/2], 500)
	waitFor(t, time.Minute, "the first member to be under way", func() bool { tot, _, _ := ca1.counts(); return tot >= 1000 })

	a2 := env.open(t, kafkabus.Config{Group: "a"})
	if _, err := a2.SubscribeAll(ca2); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, a2)
	// The second half only once the group has rebalanced: published at
	// once, a fast first member could handle it all before the join.
	waitFor(t, time.Minute, "the second member to join group a", func() bool {
		return a2.Generations() >= 1 && a1.Generations() >= 2
	})
	publishAll(t, pub, evs[n/2:], 500)
	waitFor(t, 2*time.Minute, "both groups to handle 10,000", func() bool {
		return len(mergeSeen(ca1, ca2)) >= n && len(mergeSeen(cb)) >= n
	})
	for _, b := range []*kafkabus.Bus{a1, a2, bb, pub} {
		closeBus(t, b)
	}
	seenA := mergeSeen(ca1, ca2)
	missing, dups := missingAndDups(evs, seenA)
	t1, _, _ := ca1.counts()
	t2, _, _ := ca2.counts()
	abandoned := a1.Abandoned() + a2.Abandoned()
	t.Logf("group a: %d + %d handled, %d distinct, %d duplicates (%d events abandoned at a rebalance); generations %d and %d",
		t1, t2, len(seenA), dups, abandoned, a1.Generations(), a2.Generations())
	if missing != 0 || len(seenA) != n {
		t.Errorf("group a: %d of %d events never handled, %d distinct", missing, n, len(seenA))
	}
	if uint64(dups) > abandoned {
		t.Errorf("group a: %d duplicates, more than the %d events abandoned at a rebalance", dups, abandoned)
	}
	if t2 == 0 || a1.Generations() < 2 {
		t.Errorf("the group did not rebalance: second member handled %d, first member had %d generations", t2, a1.Generations())
	}
	if h := a1.Stats().Handled + a2.Stats().Handled; h != uint64(t1+t2) {
		t.Errorf("group a acknowledged %d, handled %d", h, t1+t2)
	}
	assertExactlyOnce(t, "group b", evs, mergeSeen(cb))
	if st := pub.Stats(); st.Published != n {
		t.Errorf("published %d", st.Published)
	}
}

// Scenario 2: a member killed (SIGKILL) after fetching events and before
// committing them: once its session expires, the group rebalances and the
// survivor handles them.
func TestKafkaKilledConsumerTakenOver(t *testing.T) {
	env := newKafkaEnv(t, kafkaBrokers(t))
	survivor := env.open(t, kafkabus.Config{Group: "workers"})
	c := newCounter()
	subscribe(t, survivor, c)
	cmd := helperCmd("kafka-consumer",
		"HELPER_KAFKA_BROKERS="+strings.Join(env.brokers, ","), "HELPER_TOPIC="+env.topic, "HELPER_GROUP=workers")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	kill := startHelper(t, cmd)
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	await := func(want string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the doomed consumer exited before printing %q", want)
				}
				if l == want {
					return
				}
			case <-deadline:
				t.Fatalf("the doomed consumer never printed %q", want)
			}
		}
	}
	await("joined") // both members are in the group: the partitions are split

	const n = 600
	evs := events(n, 60, "kill")
	pub := env.open(t, kafkabus.Config{Group: "publisher"})
	publishAll(t, pub, evs, 100)
	await("holding") // it fetched events; its handlers never return, so nothing of its partitions is committed
	if got := committed(t, env, "workers"); got != nil {
		t.Logf("committed offsets before the kill: %v", got)
	}
	kill()
	before, _, _ := c.counts()
	if before >= n {
		t.Fatalf("the survivor handled all %d events before the kill: the doomed member held none", before)
	}
	waitFor(t, time.Minute, "the survivor to handle every event", func() bool { _, d, _ := c.counts(); return d >= n })
	closeBus(t, survivor)
	t.Logf("survivor: %d handled before the kill, %d after; %d generations", before, n-before, survivor.Generations())
	assertExactlyOnce(t, "survivor", evs, mergeSeen(c))
	if st := survivor.Stats(); st.Handled != n || st.DeadLettered != 0 {
		t.Errorf("survivor handled %d, dead-lettered %d; want %d, 0", st.Handled, st.DeadLettered, n)
	}
}

// committed returns the group's committed offsets on the events topic.
func committed(t *testing.T, env *kafkaEnv, group string) map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := &kafkago.Transport{} // not the shared default: its metadata cache would miss later tests' topics
	defer tr.CloseIdleConnections()
	cl := &kafkago.Client{Addr: kafkago.TCP(env.brokers...), Transport: tr}
	resp, err := cl.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{env.topic: {0, 1, 2, 3, 4, 5}}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[env.topic] {
		if p.CommittedOffset > 0 {
			out[p.Partition] = p.CommittedOffset
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// kafkaConsumerHelper is the child process of the kill scenario: it joins
// the group, says so, and blocks in its handlers until it is killed.
func kafkaConsumerHelper() int {
	ctx := context.Background()
	b, err := kafkabus.New(ctx, kafkabus.Config{
		Brokers: strings.Split(os.Getenv("HELPER_KAFKA_BROKERS"), ","), Topic: os.Getenv("HELPER_TOPIC"),
		Group: os.Getenv("HELPER_GROUP"), Registry: bustest.NewRegistry(), CreateTopics: true,
		SessionTimeout: time.Second, HeartbeatInterval: 100 * time.Millisecond, RebalanceTimeout: 10 * time.Second,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	block := make(chan struct{})
	var once sync.Once
	if _, err := b.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error {
		once.Do(func() { fmt.Println("holding") })
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
	for b.Generations() == 0 {
		time.Sleep(10 * time.Millisecond) // polling for the first assignment; the parent bounds the wait
	}
	fmt.Println("joined")
	<-block // until SIGKILL
	return 0
}

// Scenario 3: the broker (a kfake with a data directory) stopped and
// started again on the same port mid-stream. Every event whose Publish
// succeeded is handled; publishing and consuming resume on their own.
func TestKafkaBrokerRestartMidStream(t *testing.T) {
	srv := startKfake(t)
	env := newKafkaEnv(t, []string{srv.addr()})
	b := env.open(t, kafkabus.Config{Group: "g"})
	c := newCounter()
	subscribe(t, b, c)
	const half = 1000
	before, after := events(half, 20, "before"), events(half, 20, "after")
	publishAll(t, b, before, 50)
	waitFor(t, 30*time.Second, "consuming to start", func() bool { tot, _, _ := c.counts(); return tot >= 100 })

	srv.stop()
	srv.start(t)

	// Publish fails while the broker is away; the caller retries.
	failures := publishRetrying(t, b, after, 50)
	all := append(before, after...)
	waitFor(t, 2*time.Minute, "every event, before and after the restart", func() bool { _, d, _ := c.counts(); return d >= len(all) })
	closeBus(t, b)
	lost := countLost(c, all)
	_, distinct, dups := c.counts()
	t.Logf("published %d, handled %d distinct, %d duplicate deliveries, %d failed publish attempts, %d rejoins, %d generations",
		len(all), distinct, dups, failures, b.Stats().Reconnects, b.Generations())
	if lost != 0 || distinct != len(all) {
		t.Errorf("%d events lost, %d distinct of %d", lost, distinct, len(all))
	}
	if b.Generations() < 2 {
		t.Errorf("%d generations: the consumer never rejoined after the restart", b.Generations())
	}
}

// Scenario 4: a handler that always fails for one aggregate. Its event is
// dead-lettered after exactly MaxRetries attempts while the events of
// other aggregates on the same partition keep flowing; after a fix, replay
// delivers it once, to that group only.
func TestKafkaPoisonAggregateDeadLetteredOthersFlow(t *testing.T) {
	env := newKafkaEnv(t, kafkaBrokers(t))
	const maxRetries = 4
	retry := consumer.RetryPolicy{MaxRetries: maxRetries, InitialBackoff: 300 * time.Millisecond, MaxBackoff: time.Second, Multiplier: 2}
	b := env.open(t, kafkabus.Config{Group: "billing", Retry: retry, Partitions: 1}) // one partition: every aggregate shares it
	audit := env.open(t, kafkabus.Config{Group: "audit", Retry: retry, Partitions: 1})
	var fixed atomic.Bool
	c := newAttempts(func(e eventsource.Envelope) error {
		if e.AggregateID == "poison" && !fixed.Load() {
			return errors.New("cannot charge this customer")
		}
		return nil
	})
	ca := newCounter()
	subscribe(t, b, c, bus.WithName("charge"))
	subscribe(t, audit, ca)
	poison := bustest.NewEnvelope("poison", 1, bustest.Ping{N: -1})
	good := events(300, 10, "ok")
	all := append([]eventsource.Envelope{poison}, good...)
	publishAll(t, b, all, 50)
	admin := b.DeadLetters()
	ctx := context.Background()
	waitFor(t, 30*time.Second, "the other aggregates' events", func() bool { _, d, _ := c.counts(); return d >= len(good) })
	if k, _ := admin.Count(ctx); k != 0 {
		t.Errorf("the poison event was dead-lettered before the others were handled: they waited for it")
	}
	waitFor(t, 30*time.Second, "the poison event dead-lettered", func() bool { k, _ := admin.Count(ctx); return k == 1 })
	if k := c.of(poison.ID); k != maxRetries {
		t.Errorf("poison attempted %d times, want exactly %d", k, maxRetries)
	}
	recs, err := admin.List(ctx, "", 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("List = %v, %v", recs, err)
	}
	r := recs[0]
	if r.Reason != consumer.ReasonMaxRetries || r.Attempts != maxRetries || r.Group != "billing" || r.EventID != poison.ID.String() ||
		!strings.Contains(r.Error, "cannot charge") || r.Source != env.topic || r.SourceID != "0:0" || len(r.Handlers) != 1 || r.Handlers[0] != "charge" {
		t.Errorf("dead letter %+v", r)
	}
	if k, _ := audit.DeadLetters().Count(ctx); k != 0 {
		t.Errorf("audit group has %d dead letters", k)
	}

	fixed.Store(true)
	if err := admin.Replay(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the replayed event handled", func() bool { _, d, _ := c.counts(); return d >= len(all) })
	waitFor(t, 30*time.Second, "audit handled its copies", func() bool { _, d, _ := ca.counts(); return d >= len(all) })
	closeBus(t, b)
	closeBus(t, audit)
	assertExactlyOnce(t, "billing after replay", all, mergeSeen(c.counter))
	assertExactlyOnce(t, "audit (not replayed to)", all, mergeSeen(ca))
	if k, _ := admin.Count(ctx); k != 0 {
		t.Errorf("%d dead letters after replay", k)
	}
	if st := b.Stats(); st.DeadLettered != 1 || st.Retries != maxRetries-1 {
		t.Errorf("stats dead %d retries %d; want 1, %d", st.DeadLettered, st.Retries, maxRetries-1)
	}
}

// Scenario 5: garbage bytes, an unknown event type and an empty record,
// written raw to the topic, are dead-lettered with the right reason; the
// next good event is handled.
func TestKafkaBadInputDeadLettered(t *testing.T) {
	env := newKafkaEnv(t, kafkaBrokers(t))
	badInputDeadLettered(t, badInputCase{
		open: func() brokerBus { return env.open(t, kafkabus.Config{Group: "g", Partitions: 1}) },
		inject: func(ctx context.Context, unknownID string) [3]string {
			tr := &kafkago.Transport{} // not the shared default, whose metadata cache may predate the topic
			defer tr.CloseIdleConnections()
			w := &kafkago.Writer{Addr: kafkago.TCP(env.brokers...), Topic: env.topic, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, Transport: tr}
			defer w.Close()
			if err := w.WriteMessages(ctx,
				kafkago.Message{Value: []byte(garbageBytes)},
				kafkago.Message{Key: []byte("x"), Headers: []kafkago.Header{{Key: "es-event-type", Value: []byte("NoSuchType")}}, Value: unknownTypeBody(unknownID)},
				kafkago.Message{Value: nil}, // an empty record
			); err != nil {
				t.Fatal(err)
			}
			return [3]string{"0:1", "0:2", "0:3"} // after the first good event, at offset 0 of the one partition
		},
		record: func(i int, r consumer.DeadLetter, unknownID string) error {
			if r.Source != env.topic || r.Error == "" {
				return fmt.Errorf("source %q, want %q, or no error", r.Source, env.topic)
			}
			if i == 1 && !strings.Contains(string(r.Body), unknownID) {
				return errors.New("body does not hold the event")
			}
			return nil
		},
	})
}
