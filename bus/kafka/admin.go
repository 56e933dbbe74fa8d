package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// admin is the dead-letter admin API of one group. Kafka cannot delete one
// record, so the dead-letter topic is a log of records and tombstones
// (same key, the es-tombstone header, a null value: compaction removes
// both); admin reads the whole partition and folds it. That is linear in
// the topic's size, which suits a dead-letter topic that is kept small.
type admin struct{ b *Bus }

// dlqState is the folded dead-letter topic.
type dlqState struct {
	live  []consumer.DeadLetter // in the order of their latest write
	wrote map[string]int64      // record ID -> offset of its latest write, removed ones included
	pos   map[string]int64      // live record ID -> offset of its latest write
}

func (a admin) read(ctx context.Context) (*dlqState, error) {
	b := a.b
	topic := b.cfg.dlqTopic()
	if err := b.seeTopics(ctx, topic); err != nil {
		return nil, fmt.Errorf("kafka bus: read dead letters: %w", err)
	}
	lo, err := b.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{
		Topics: map[string][]kafkago.OffsetRequest{topic: {kafkago.FirstOffsetOf(0), kafkago.LastOffsetOf(0)}},
	})
	if err != nil {
		return nil, fmt.Errorf("kafka bus: read dead letters: %w", err)
	}
	parts := lo.Topics[topic]
	if len(parts) == 0 {
		return nil, fmt.Errorf("kafka bus: read dead letters: %w: %s", ErrMissingTopic, topic)
	}
	if parts[0].Error != nil {
		return nil, fmt.Errorf("kafka bus: read dead letters: %w", parts[0].Error)
	}
	offset, end := parts[0].FirstOffset, parts[0].LastOffset
	byID := map[string]consumer.DeadLetter{}
	st := &dlqState{wrote: map[string]int64{}, pos: map[string]int64{}}
	for offset < end {
		resp, err := b.client.Fetch(ctx, &kafkago.FetchRequest{
			Topic: topic, Partition: 0, Offset: offset, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond,
		})
		if err != nil {
			return nil, fmt.Errorf("kafka bus: read dead letters: %w", err)
		}
		if resp.Error != nil {
			return nil, fmt.Errorf("kafka bus: read dead letters: %w", resp.Error)
		}
		progressed := false
		for {
			r, err := resp.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("kafka bus: read dead letters: %w", err)
			}
			if r.Offset < offset {
				continue // a batch can start before the offset asked for
			}
			offset, progressed = r.Offset+1, true
			key, err := readBytes(r.Key)
			if err != nil {
				return nil, fmt.Errorf("kafka bus: read dead letters: %w", err)
			}
			id := string(key)
			if header(r.Headers, hdrTombstone) != "" {
				delete(byID, id)
				delete(st.pos, id)
				continue
			}
			value, err := readBytes(r.Value)
			if err != nil {
				return nil, fmt.Errorf("kafka bus: read dead letters: %w", err)
			}
			byID[id] = parseDeadLetter(id, value, r.Headers)
			st.wrote[id], st.pos[id] = r.Offset, r.Offset
		}
		if !progressed {
			if resp.HighWatermark <= offset || ctx.Err() != nil {
				break
			}
		}
		end = min(end, resp.HighWatermark)
	}
	for _, rec := range byID {
		st.live = append(st.live, rec)
	}
	slices.SortFunc(st.live, func(x, y consumer.DeadLetter) int { return int(st.pos[x.ID] - st.pos[y.ID]) })
	return st, nil
}

func readBytes(b kafkago.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	defer b.Close()
	return io.ReadAll(b)
}

func parseDeadLetter(id string, body []byte, hs []kafkago.Header) consumer.DeadLetter {
	get := func(k string) string { return header(hs, k) }
	rec := consumer.DeadLetter{
		ID: id, Reason: consumer.Reason(get(hdrReason)), Error: get(hdrError), Group: get(hdrGroup),
		Handlers: decodeHandlers([]byte(get(hdrHandlers))), EventID: get(hdrEventID), EventType: get(hdrEventType),
		AggregateType: get(hdrAggregateType), AggregateID: get(hdrAggregateID),
		Source: get(hdrOriginTopic), SourceID: get(hdrOriginPartition) + ":" + get(hdrOriginOffset), Body: body,
	}
	rec.Attempts, _ = strconv.Atoi(get(hdrAttempts))
	rec.Version, _ = strconv.ParseInt(get(hdrVersion), 10, 64)
	rec.Time, _ = time.Parse(time.RFC3339Nano, get(hdrTime))
	if size := get(hdrDroppedSize); size != "" {
		rec.BodyDropped = true
		rec.Size, _ = strconv.Atoi(size)
	}
	return rec
}

// List returns up to limit records, oldest first, after the record with
// ID after (which may have been replayed since).
func (a admin) List(ctx context.Context, after string, limit int) ([]consumer.DeadLetter, error) {
	st, err := a.read(ctx)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	recs := st.live
	if after != "" {
		cursor, ok := st.wrote[after]
		if !ok {
			return nil, fmt.Errorf("kafka bus: dead letter %s of group %q: %w", after, a.b.cfg.Group, eventsource.ErrNotFound)
		}
		i := 0
		for i < len(recs) && st.pos[recs[i].ID] <= cursor {
			i++
		}
		recs = recs[i:]
	}
	return slices.Clone(recs[:min(limit, len(recs))]), nil
}

// Count returns how many records there are.
func (a admin) Count(ctx context.Context) (int64, error) {
	st, err := a.read(ctx)
	if err != nil {
		return 0, err
	}
	return int64(len(st.live)), nil
}

// Replay writes the record's event to the group's retry topic, due now,
// with a fresh retry budget and the record's origin, then a tombstone for
// the record. Two replays of one record at the same moment can both
// deliver it. A record without its body stays (consumer.ErrBodyDropped).
func (a admin) Replay(ctx context.Context, id string) error {
	st, err := a.read(ctx)
	if err != nil {
		return err
	}
	for _, rec := range st.live {
		if rec.ID != id {
			continue
		}
		if rec.BodyDropped {
			return fmt.Errorf("kafka bus: dead letter %s of group %q: %w", id, a.b.cfg.Group, consumer.ErrBodyDropped)
		}
		_, err := a.replay(ctx, []consumer.DeadLetter{rec})
		return err
	}
	return fmt.Errorf("kafka bus: dead letter %s of group %q: %w", id, a.b.cfg.Group, eventsource.ErrNotFound)
}

// ReplayAll replays every record present when it starts, but those
// without their body, which stay.
func (a admin) ReplayAll(ctx context.Context) (int, error) {
	st, err := a.read(ctx)
	if err != nil {
		return 0, err
	}
	recs := slices.DeleteFunc(st.live, func(r consumer.DeadLetter) bool { return r.BodyDropped })
	return a.replay(ctx, recs)
}

func (a admin) replay(ctx context.Context, recs []consumer.DeadLetter) (int, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	b := a.b
	if err := b.seeTopics(ctx, b.cfg.retryTopic()); err != nil {
		return 0, fmt.Errorf("kafka bus: replay dead letters: %w", err)
	}
	msgs := make([]kafkago.Message, len(recs))
	for i, rec := range recs {
		part, off, _ := cutSourceID(rec.SourceID)
		msgs[i] = kafkago.Message{
			Topic: b.cfg.retryTopic(), Key: []byte(rec.AggregateID), Value: rec.Body,
			Headers: []kafkago.Header{
				{Key: hdrEventID, Value: []byte(rec.EventID)},
				{Key: hdrEventType, Value: []byte(rec.EventType)},
				{Key: hdrAggregateType, Value: []byte(rec.AggregateType)},
				{Key: hdrAggregateID, Value: []byte(rec.AggregateID)},
				{Key: hdrVersion, Value: strconv.AppendInt(nil, rec.Version, 10)},
				{Key: hdrAttempt, Value: []byte("1")},
				{Key: hdrHandlers, Value: encodeHandlers(rec.Handlers)},
				{Key: hdrOriginTopic, Value: []byte(rec.Source)},
				{Key: hdrOriginPartition, Value: []byte(part)},
				{Key: hdrOriginOffset, Value: []byte(off)},
				{Key: hdrReplayOf, Value: []byte(rec.ID)},
			},
		}
	}
	// The event first, then the tombstone: a failure in between leaves
	// the record to be replayed again (a duplicate), never a lost event.
	if err := b.writer.WriteMessages(ctx, msgs...); err != nil {
		return 0, fmt.Errorf("kafka bus: replay dead letters: %w", err)
	}
	if err := a.tombstone(ctx, recs, "replayed"); err != nil {
		return len(recs), err
	}
	return len(recs), nil
}

func cutSourceID(s string) (part, off string, ok bool) { return strings.Cut(s, ":") }

func (a admin) tombstone(ctx context.Context, recs []consumer.DeadLetter, why string) error {
	msgs := make([]kafkago.Message, len(recs))
	for i, rec := range recs {
		msgs[i] = kafkago.Message{Topic: a.b.cfg.dlqTopic(), Key: []byte(rec.ID),
			Headers: []kafkago.Header{{Key: hdrTombstone, Value: []byte(why)}}}
	}
	if err := a.b.writer.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("kafka bus: remove dead letters: %w", err)
	}
	return nil
}

// Purge removes every record (skipping their events for good) and
// returns how many there were.
func (a admin) Purge(ctx context.Context) (int64, error) {
	st, err := a.read(ctx)
	if err != nil {
		return 0, err
	}
	n, err := a.purge(ctx, st.live)
	return int64(n), err
}

// purge tombstones recs (a purge skips their events for good) and returns
// how many there were.
func (a admin) purge(ctx context.Context, recs []consumer.DeadLetter) (int, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	if err := a.tombstone(ctx, recs, "purged"); err != nil {
		return 0, err
	}
	return len(recs), nil
}

// RemoveDeadLetters removes the group's dead letters with these IDs
// (skipping their events for good), for a purge by filter, and returns
// how many of them there were; an ID that names no record is ignored.
// Like Purge, it appends a tombstone per record.
func (b *Bus) RemoveDeadLetters(ctx context.Context, ids ...string) (int, error) {
	a := admin{b}
	st, err := a.read(ctx)
	if err != nil {
		return 0, err
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	return a.purge(ctx, slices.DeleteFunc(st.live, func(r consumer.DeadLetter) bool { return !want[r.ID] }))
}
