package kafka

import (
	"context"
	"errors"
	"fmt"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource/bus"
)

var _ bus.LagReporter = (*Bus)(nil)

// Lag returns the group's consumer lag: for every partition of the events
// topics and the group's retry topic, the log's end offset minus the
// offset the group committed (its first offset when it committed none),
// summed. Events delivered and not yet committed count, as Kafka's tools
// count them. A topic that does not exist yet counts as empty.
func (b *Bus) Lag(ctx context.Context) ([]bus.Lag, error) {
	topics := append(b.cfg.eventTopics(), b.cfg.retryTopic())
	md, err := b.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("kafka bus: lag of group %q: metadata: %w", b.cfg.Group, err)
	}
	offsets := map[string][]kafkago.OffsetRequest{}
	partitions := map[string][]int{}
	for _, t := range md.Topics {
		if t.Error != nil {
			continue // not created yet: nothing to lag behind
		}
		for _, p := range t.Partitions {
			offsets[t.Name] = append(offsets[t.Name], kafkago.FirstOffsetOf(p.ID), kafkago.LastOffsetOf(p.ID))
			partitions[t.Name] = append(partitions[t.Name], p.ID)
		}
	}
	if len(partitions) == 0 {
		return []bus.Lag{{Kind: bus.LagConsumer}}, nil
	}
	lo, err := b.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: offsets})
	if err != nil {
		return nil, fmt.Errorf("kafka bus: lag of group %q: offsets: %w", b.cfg.Group, err)
	}
	committed, err := b.client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: b.cfg.Group, Topics: partitions})
	if err != nil {
		return nil, fmt.Errorf("kafka bus: lag of group %q: committed offsets: %w", b.cfg.Group, err)
	}
	if errors.Is(committed.Error, kafkago.GroupIdNotFound) {
		// A group that never joined has committed nothing.
		committed = &kafkago.OffsetFetchResponse{}
	} else if committed.Error != nil {
		return nil, fmt.Errorf("kafka bus: lag of group %q: committed offsets: %w", b.cfg.Group, committed.Error)
	}
	var lag int64
	for topic, parts := range lo.Topics {
		from := map[int]int64{}
		for _, p := range committed.Topics[topic] {
			if p.Error != nil {
				return nil, fmt.Errorf("kafka bus: lag of group %q: committed offset of %s/%d: %w", b.cfg.Group, topic, p.Partition, p.Error)
			}
			from[p.Partition] = p.CommittedOffset
		}
		for _, p := range parts {
			if p.Error != nil {
				return nil, fmt.Errorf("kafka bus: lag of group %q: offsets of %s/%d: %w", b.cfg.Group, topic, p.Partition, p.Error)
			}
			start, ok := from[p.Partition]
			if !ok || start < 0 { // nothing committed: the group starts at the first offset
				start = p.FirstOffset
			}
			lag += max(p.LastOffset-start, 0)
		}
	}
	return []bus.Lag{{Kind: bus.LagConsumer, Messages: lag}}, nil
}
