package kafka

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource/bus/consumer"
)

// settler settles the dispatcher's messages: acknowledging moves the
// partition's commit point, rescheduling writes to the group's retry
// topic, dead-lettering to its dead-letter topic. A write that fails is
// retried by the dispatcher; the original stays unsettled meanwhile.
type settler struct{ b *Bus }

var _ consumer.Rescheduler = settler{}

// byPartition groups messages' offsets by partition; a batch usually
// holds a few partitions, so a slice beats a map.
type partOffsets struct {
	p    *partition
	offs []int64
}

func groupRefs(msgs []consumer.Message) []partOffsets {
	var out []partOffsets
next:
	for _, m := range msgs {
		r := m.Ref.(ref)
		for i := range out {
			if out[i].p == r.p {
				out[i].offs = append(out[i].offs, r.offset)
				continue next
			}
		}
		out = append(out, partOffsets{p: r.p, offs: []int64{r.offset}})
	}
	return out
}

// Ack marks the messages settled; the commit loop commits them.
func (settler) Ack(_ context.Context, msgs []consumer.Message) error {
	for _, g := range groupRefs(msgs) {
		g.p.settle(g.offs...)
	}
	return nil
}

// Release leaves the messages unsettled: the commit point stays before
// them, so the partition's next owner reads them again.
func (settler) Release(_ context.Context, msgs []consumer.Message) {
	for _, g := range groupRefs(msgs) {
		g.p.release(len(g.offs))
	}
}

// origin is where an event was first read: its own position, or the one a
// retried or replayed copy carries.
func origin(msg consumer.Message) (topic, part, off string) {
	part, off, _ = strings.Cut(msg.ID, ":")
	return msg.Source, part, off
}

// maxErrorHeader bounds the error text carried in headers.
const maxErrorHeader = 2048

func truncate(s string) string {
	if len(s) <= maxErrorHeader {
		return s
	}
	return s[:maxErrorHeader] + "…"
}

// Reschedule writes the event to the group's retry topic, due after
// r.Delay, then settles the original.
func (s settler) Reschedule(ctx context.Context, msg consumer.Message, r consumer.Retry) error {
	b := s.b
	rf := msg.Ref.(ref)
	topic, part, off := origin(msg)
	hs := withHeaders(rf.headers,
		kafkago.Header{Key: hdrAttempt, Value: strconv.AppendInt(nil, int64(r.Attempts+1), 10)},
		kafkago.Header{Key: hdrRetryAt, Value: strconv.AppendInt(nil, time.Now().Add(r.Delay).UnixMilli(), 10)},
		kafkago.Header{Key: hdrHandlers, Value: encodeHandlers(r.Handlers)},
		kafkago.Header{Key: hdrError, Value: []byte(truncate(r.Error))},
		kafkago.Header{Key: hdrOriginTopic, Value: []byte(topic)},
		kafkago.Header{Key: hdrOriginPartition, Value: []byte(part)},
		kafkago.Header{Key: hdrOriginOffset, Value: []byte(off)},
	)
	err := b.writer.WriteMessages(ctx, kafkago.Message{Topic: b.cfg.retryTopic(), Key: []byte(msg.Key), Value: msg.Body, Headers: hs})
	if err != nil {
		return fmt.Errorf("kafka bus: write to retry topic: %w", refusal(err))
	}
	rf.p.settle(rf.offset)
	return nil
}

// DeadLetter writes the record to the group's dead-letter topic, then
// settles the original. The record's key (its ID) is the position of the
// message consumed: the same message dead-lettered twice (a redelivery)
// makes one record, while a replay, a new message, makes a new one. Keyed
// by the event's origin instead, a replay dead-lettered again before the
// replay's tombstone was written shared the tombstone's key: the fold
// hid the new record and compaction would delete it.
func (s settler) DeadLetter(ctx context.Context, msg consumer.Message, rec consumer.DeadLetter) error {
	b := s.b
	rf := msg.Ref.(ref)
	topic, part, off := origin(msg)
	hs := []kafkago.Header{
		{Key: hdrEventID, Value: []byte(rec.EventID)},
		{Key: hdrEventType, Value: []byte(rec.EventType)},
		{Key: hdrAggregateType, Value: []byte(rec.AggregateType)},
		{Key: hdrAggregateID, Value: []byte(rec.AggregateID)},
		{Key: hdrVersion, Value: strconv.AppendInt(nil, rec.Version, 10)},
		{Key: hdrReason, Value: []byte(rec.Reason)},
		{Key: hdrError, Value: []byte(truncate(rec.Error))},
		{Key: hdrAttempts, Value: strconv.AppendInt(nil, int64(rec.Attempts), 10)},
		{Key: hdrGroup, Value: []byte(rec.Group)},
		{Key: hdrHandlers, Value: encodeHandlers(rec.Handlers)},
		{Key: hdrTime, Value: []byte(rec.Time.Format(time.RFC3339Nano))},
		{Key: hdrOriginTopic, Value: []byte(topic)},
		{Key: hdrOriginPartition, Value: []byte(part)},
		{Key: hdrOriginOffset, Value: []byte(off)},
	}
	for _, k := range []string{hdrTraceParent, hdrTraceState} {
		if v := header(rf.headers, k); v != "" {
			hs = append(hs, kafkago.Header{Key: k, Value: []byte(v)})
		}
	}
	if rec.BodyDropped {
		hs = append(hs, kafkago.Header{Key: hdrDroppedSize, Value: strconv.AppendInt(nil, int64(rec.Size), 10)})
	}
	body := rec.Body
	if body == nil {
		body = []byte{} // a nil value would be a Kafka tombstone
	}
	id := recordID(rf.p.topic, strconv.Itoa(rf.p.id), strconv.FormatInt(rf.offset, 10))
	err := b.writer.WriteMessages(ctx, kafkago.Message{Topic: b.cfg.dlqTopic(), Key: []byte(id), Value: body, Headers: hs})
	if err != nil {
		return fmt.Errorf("kafka bus: write to dead-letter topic: %w", refusal(err))
	}
	rf.p.settle(rf.offset)
	return nil
}

// recordID names a dead letter by the event's origin, "topic:partition:offset"
// (topic names cannot hold ':'): a record written twice (a crash between
// the write and the commit) is one record.
func recordID(topic, part, off string) string { return topic + ":" + part + ":" + off }
