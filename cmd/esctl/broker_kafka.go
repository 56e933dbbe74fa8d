package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource/bus/consumer"
	kafkabus "github.com/eventsource-go/eventsource/bus/kafka"
)

type kafkaBroker struct {
	e       *env
	brokers []string
	// The broker's own transport, closed with it: kafka-go's default one is
	// shared by the whole process and never closed, and its metadata cache
	// lags behind topics created elsewhere for up to 6s.
	transport *kafkago.Transport
	client    *kafkago.Client
	buses     busCache[*kafkabus.Bus]
}

func newKafkaBroker(ctx context.Context, e *env, logger *slog.Logger) (*kafkaBroker, error) {
	var brokers []string
	for p := range strings.SplitSeq(e.kafkaBrokers, ",") {
		if p = strings.TrimSpace(p); p != "" {
			brokers = append(brokers, p)
		}
	}
	tr := &kafkago.Transport{DialTimeout: e.timeout, ClientID: "esctl"}
	b := &kafkaBroker{e: e, brokers: brokers, transport: tr,
		client: &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: tr, Timeout: e.timeout}}
	if _, err := b.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{e.topic}}); err != nil {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("kafka %s: %w", redactedBrokers(e.kafkaBrokers), err)
	}
	b.buses.open = func(ctx context.Context, group string) (*kafkabus.Bus, error) {
		return kafkabus.New(ctx, kafkabus.Config{
			Brokers: brokers, Registry: emptyRegistry(), Topic: e.topic, Group: group, Logger: logger,
		})
	}
	return b, nil
}

func (b *kafkaBroker) kind() string { return "kafka" }
func (b *kafkaBroker) where() string {
	return fmt.Sprintf("kafka %s topic %s", redactedBrokers(b.e.kafkaBrokers), b.e.topic)
}

func (b *kafkaBroker) dlqTopic(group string) string { return b.e.topic + ".dlq." + group }

// groups are those with a dead-letter topic (<topic>.dlq.<group>).
func (b *kafkaBroker) groups(ctx context.Context) ([]string, error) {
	md, err := b.client.Metadata(ctx, &kafkago.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("kafka: list topics: %w", err)
	}
	prefix := b.dlqTopic("")
	var out []string
	for _, t := range md.Topics {
		if g, ok := strings.CutPrefix(t.Name, prefix); ok && g != "" {
			out = append(out, g)
		}
	}
	return out, nil
}

func (b *kafkaBroker) admin(ctx context.Context, group string) (consumer.Admin, error) {
	bus, err := b.buses.get(ctx, group)
	if err != nil {
		return nil, err
	}
	return missingIsEmpty{bus.DeadLetters()}, nil
}

// missingIsEmpty: a group that never dead-lettered has no topic yet,
// which is no dead letters rather than an error.
type missingIsEmpty struct{ consumer.Admin }

func (a missingIsEmpty) List(ctx context.Context, after string, limit int) ([]consumer.DeadLetter, error) {
	recs, err := a.Admin.List(ctx, after, limit)
	if errors.Is(err, kafkabus.ErrMissingTopic) {
		return nil, nil
	}
	return recs, err
}

func (a missingIsEmpty) Count(ctx context.Context) (int64, error) {
	n, err := a.Admin.Count(ctx)
	if errors.Is(err, kafkabus.ErrMissingTopic) {
		return 0, nil
	}
	return n, err
}

// remove has the group's bus remove the records, as its admin API's
// Purge does (a tombstone per record), through the bus's own connections.
func (b *kafkaBroker) remove(ctx context.Context, group string, recs []consumer.DeadLetter) (int, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	bus, err := b.buses.get(ctx, group)
	if err != nil {
		return 0, err
	}
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	n, err := bus.RemoveDeadLetters(ctx, ids...)
	if err != nil {
		return 0, fmt.Errorf("kafka: delete dead letters of %q: %w", group, err)
	}
	return n, nil
}

// offsets returns the first and end offset of every partition of topic.
func (b *kafkaBroker) offsets(ctx context.Context, topic string) (map[int][2]int64, error) {
	md, err := b.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("kafka: metadata of %s: %w", topic, err)
	}
	var reqs []kafkago.OffsetRequest
	for _, t := range md.Topics {
		if t.Error != nil {
			return nil, fmt.Errorf("kafka: topic %s: %w", topic, t.Error)
		}
		for _, p := range t.Partitions {
			reqs = append(reqs, kafkago.FirstOffsetOf(p.ID), kafkago.LastOffsetOf(p.ID))
		}
	}
	out := map[int][2]int64{}
	if len(reqs) == 0 {
		return out, nil
	}
	lo, err := b.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("kafka: offsets of %s: %w", topic, err)
	}
	for _, p := range lo.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("kafka: offsets of %s/%d: %w", topic, p.Partition, p.Error)
		}
		out[p.Partition] = [2]int64{p.FirstOffset, p.LastOffset}
	}
	return out, nil
}

func (b *kafkaBroker) stats(ctx context.Context, group string) (groupStats, error) {
	st := groupStats{Bus: "kafka", Group: group, Pending: -1, Consumers: -1}
	offs, err := b.offsets(ctx, b.e.topic)
	if err != nil {
		return st, err
	}
	parts := make([]int, 0, len(offs))
	for p, o := range offs {
		st.Events += o[1] - o[0]
		parts = append(parts, p)
	}
	committed, err := b.client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{b.e.topic: parts}})
	if err != nil {
		return st, fmt.Errorf("kafka: committed offsets of %q: %w", group, err)
	}
	for _, p := range committed.Topics[b.e.topic] {
		o := offs[p.Partition]
		from := p.CommittedOffset
		if from < 0 { // nothing committed: the group starts at the first offset
			from = o[0]
		}
		st.Backlog += max(o[1]-from, 0)
	}
	if roffs, err := b.offsets(ctx, b.e.topic+".retry."+group); err == nil {
		for _, o := range roffs {
			st.Retrying += o[1] - o[0] // records ever written and kept, not only waiting ones
		}
	}
	adm, err := b.admin(ctx, group)
	if err != nil {
		return st, err
	}
	if st.DeadLetters, err = adm.Count(ctx); err != nil {
		return st, err
	}
	return st, nil
}

// tail reads every partition from its end with partition readers, which
// join no group and commit nothing: no group is created or disturbed.
func (b *kafkaBroker) tail(ctx context.Context, ready func(), fn func(rawEvent)) error {
	// A topic just created can be unknown to the broker answering for a
	// moment: wait for it, up to -timeout.
	deadline := time.Now().Add(b.e.timeout)
	offs, err := b.offsets(ctx, b.e.topic)
	for errors.Is(err, kafkago.UnknownTopicOrPartition) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
		offs, err = b.offsets(ctx, b.e.topic)
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		readErr error
	)
	for p, o := range offs {
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: b.brokers, Topic: b.e.topic, Partition: p,
			MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 500 * time.Millisecond})
		if err := r.SetOffset(o[1]); err != nil {
			_ = r.Close()
			return fmt.Errorf("kafka: tail %s/%d: %w", b.e.topic, p, err)
		}
		wg.Go(func() {
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						readErr = fmt.Errorf("kafka: tail %s/%d: %w", b.e.topic, p, err)
						mu.Unlock()
						cancel()
					}
					return
				}
				ev, derr := decodeEnvelope(m.Value)
				if derr != nil {
					ev.AggregateID = string(m.Key)
				}
				ev.Source = fmt.Sprintf("%s/%d@%d", m.Topic, m.Partition, m.Offset)
				mu.Lock()
				fn(ev)
				mu.Unlock()
			}
		})
	}
	ready()
	wg.Wait()
	return readErr
}

func (b *kafkaBroker) close() {
	b.buses.closeAll()
	b.transport.CloseIdleConnections()
}
