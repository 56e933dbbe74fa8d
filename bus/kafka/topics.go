package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	metadataapi "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/eventsource-go/eventsource/internal/sleep"
)

// ensureTopics checks that the topics exist, creating the missing ones
// with the given partition count when Config.CreateTopics is set. It asks
// through a transport of its own: kafka-go's Transport answers metadata
// requests from a cache that does not see topics created elsewhere (by
// another member, say) until it expires. The bus's own transport is then
// made to see them, so that its first write does not fail.
func (b *Bus) ensureTopics(ctx context.Context, topics []string, partitions int) error {
	tr := b.newTransport()
	defer tr.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(b.cfg.Brokers...), Transport: tr, Timeout: b.cfg.DialTimeout}
	missing, err := missingTopics(ctx, c, topics)
	if err != nil {
		return fmt.Errorf("kafka bus: reach brokers %v: %w", b.cfg.Brokers, err)
	}
	if len(missing) > 0 && !b.cfg.CreateTopics {
		return fmt.Errorf("%w: %s (create it, or set Config.CreateTopics)", ErrMissingTopic, strings.Join(missing, ", "))
	}
	if len(missing) > 0 {
		req := &kafkago.CreateTopicsRequest{}
		for _, t := range missing {
			tc := kafkago.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: b.cfg.ReplicationFactor}
			if t == b.cfg.dlqTopic() {
				tc.ConfigEntries = dlqTopicConfig
			}
			req.Topics = append(req.Topics, tc)
		}
		resp, err := c.CreateTopics(ctx, req)
		if err != nil {
			return fmt.Errorf("kafka bus: create topics %s: %w", strings.Join(missing, ", "), err)
		}
		for t, e := range resp.Errors {
			if e != nil && !errors.Is(e, kafkago.TopicAlreadyExists) {
				return fmt.Errorf("kafka bus: create topic %s: %w", t, e)
			}
		}
		// A created topic reaches every broker's metadata a little later.
		for {
			missing, err = missingTopics(ctx, c, topics)
			if err == nil && len(missing) == 0 {
				break
			}
			if !sleep.For(ctx, 20*time.Millisecond) {
				return fmt.Errorf("kafka bus: created topics %s do not show in metadata: %w", strings.Join(missing, ", "), ctx.Err())
			}
		}
	}
	return b.refreshMetadata(ctx, topics)
}

// refreshMetadata makes the shared transport's metadata cache see topics
// that exist. A metadata request that allows auto-creation bypasses the
// cache and refreshes it (the topics exist, so nothing is created).
func (b *Bus) refreshMetadata(ctx context.Context, topics []string) error {
	if _, err := b.transport.RoundTrip(ctx, kafkago.TCP(b.cfg.Brokers...), &metadataapi.Request{TopicNames: topics, AllowAutoTopicCreation: true}); err != nil {
		return fmt.Errorf("kafka bus: refresh metadata: %w", err)
	}
	return nil
}

// seeTopics makes sure the shared transport knows topics that exist, and
// fails with ErrMissingTopic for those that do not. kafka-go's Transport
// routes every request by its metadata cache, which learns of a topic
// created after it was filled (by another process, a member that
// dead-lettered first, say) only at its next refresh, up to 6s later,
// and fails requests for that topic until then. Asking the cache costs no
// round trip; the brokers are asked only when it lacks a topic.
func (b *Bus) seeTopics(ctx context.Context, topics ...string) error {
	r, err := b.transport.RoundTrip(ctx, kafkago.TCP(b.cfg.Brokers...), &metadataapi.Request{TopicNames: topics})
	if err != nil {
		return fmt.Errorf("kafka bus: metadata: %w", err)
	}
	known := 0
	for _, t := range r.(*metadataapi.Response).Topics {
		if t.ErrorCode == 0 && len(t.Partitions) > 0 {
			known++
		}
	}
	if known == len(topics) {
		return nil
	}
	tr := b.newTransport()
	defer tr.CloseIdleConnections()
	missing, err := missingTopics(ctx, &kafkago.Client{Addr: kafkago.TCP(b.cfg.Brokers...), Transport: tr, Timeout: b.cfg.DialTimeout}, topics)
	if err != nil {
		return fmt.Errorf("kafka bus: reach brokers %v: %w", b.cfg.Brokers, err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrMissingTopic, strings.Join(missing, ", "))
	}
	return b.refreshMetadata(ctx, topics)
}

// dlqTopicConfig keeps dead letters until they are replayed or purged:
// with the broker's defaults (delete after 7 days) the records nobody
// replayed in time would vanish, and their events with them, their
// offsets being committed long before. Compaction removes a replayed or
// purged record with its tombstone (see admin).
var dlqTopicConfig = []kafkago.ConfigEntry{
	{ConfigName: "cleanup.policy", ConfigValue: "compact"},
	{ConfigName: "retention.ms", ConfigValue: "-1"},
}

// missingTopics returns those of topics that do not exist or have a
// partition without a leader yet.
func missingTopics(ctx context.Context, c *kafkago.Client, topics []string) ([]string, error) {
	meta, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, err
	}
	ready := map[string]bool{}
	for _, t := range meta.Topics {
		if t.Error != nil || len(t.Partitions) == 0 {
			continue
		}
		ok := true
		for _, p := range t.Partitions {
			if p.Error != nil || p.Leader.Host == "" {
				ok = false
			}
		}
		ready[t.Name] = ok
	}
	var missing []string
	for _, t := range topics {
		if !ready[t] {
			missing = append(missing, t)
		}
	}
	return missing, nil
}

// DeleteTopics deletes topics (those of Config.Topics, say) with cfg's
// brokers, SASL and TLS settings. Topics that do not exist are ignored.
// Tests and tools use it; a bus never deletes topics.
func DeleteTopics(ctx context.Context, cfg Config, topics ...string) error {
	if len(topics) == 0 {
		return nil
	}
	cfg = cfg.WithDefaults()
	tr := newTransport(cfg, nil)
	defer tr.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: tr, Timeout: cfg.DialTimeout}
	resp, err := c.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("kafka bus: delete topics: %w", err)
	}
	var errs []error
	for t, e := range resp.Errors {
		if e != nil && !errors.Is(e, kafkago.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("delete topic %s: %w", t, e))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kafka bus: %w", errors.Join(errs...))
	}
	return nil
}

// newTransport returns a transport that dials with dial, or with a plain
// net.Dialer when dial is nil.
func newTransport(cfg Config, dial func(ctx context.Context, network, address string) (net.Conn, error)) *kafkago.Transport {
	if dial == nil {
		dial = (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	return &kafkago.Transport{Dial: dial, DialTimeout: cfg.DialTimeout, SASL: cfg.SASL, TLS: cfg.TLS, ClientID: "eventsource"}
}

// newTransport returns a transport of its own for a short task, which
// closes it.
func (b *Bus) newTransport() *kafkago.Transport { return newTransport(b.cfg, nil) }
