package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// Dead-letter fields, beside the event fields.
const (
	fieldReason      = "reason"
	fieldError       = "error"
	fieldAttempts    = "attempts"
	fieldGroup       = "group"
	fieldTime        = "time"
	fieldSource      = "source"
	fieldSourceID    = "source_id"
	fieldDroppedSize = "dropped_size" // stored without the original bytes, this many
)

// settler acknowledges and dead-letters for the dispatcher.
type settler struct{ b *Bus }

// Ack XACKs a batch in one round trip. Replayed entries are deleted too:
// the replay stream belongs to one group, so nobody else needs them.
func (s settler) Ack(ctx context.Context, msgs []consumer.Message) error {
	b := s.b
	var events, replay []string
	for _, m := range msgs {
		if m.Source == b.keys.replay {
			replay = append(replay, m.ID)
		} else {
			events = append(events, m.ID)
		}
	}
	_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		if len(events) > 0 {
			p.XAck(ctx, b.keys.events, b.cfg.Group, events...)
		}
		if len(replay) > 0 {
			p.XAck(ctx, b.keys.replay, b.cfg.Group, replay...)
			p.XDel(ctx, b.keys.replay, replay...)
		}
		return nil
	})
	if err == nil {
		b.held.remove(msgs...)
	}
	return err
}

// origin is where a replayed entry's event was first read, from the fields
// the replay copied from its record: a replay dead-lettered again keeps
// pointing at the original bytes, not at the replay stream's entry, which
// is deleted when settled.
type origin struct{ source, id string }

// DeadLetter appends the record to the group's dead-letter stream and
// acks the entry in one MULTI, so it is never both pending and dead.
func (s settler) DeadLetter(ctx context.Context, msg consumer.Message, rec consumer.DeadLetter) error {
	b := s.b
	if o, ok := msg.Ref.(origin); ok {
		rec.Source, rec.SourceID = o.source, o.id
	}
	handlers, _ := json.Marshal(rec.Handlers)
	if rec.Handlers == nil {
		handlers = []byte("[]")
	}
	values := []any{
		fieldID, rec.EventID, fieldType, rec.EventType, fieldAggType, rec.AggregateType,
		fieldAggID, rec.AggregateID, fieldVersion, itoa(rec.Version), fieldEnvelope, rec.Body,
		fieldReason, string(rec.Reason), fieldError, rec.Error, fieldAttempts, strconv.Itoa(rec.Attempts),
		fieldGroup, rec.Group, fieldHandlers, string(handlers), fieldTime, rec.Time.Format(time.RFC3339Nano),
		fieldSource, rec.Source, fieldSourceID, rec.SourceID,
	}
	if rec.BodyDropped {
		values = append(values, fieldDroppedSize, strconv.Itoa(rec.Size))
	}
	_, err := b.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.XAdd(ctx, &goredis.XAddArgs{Stream: b.keys.dlq, ID: "*", Values: values})
		p.XAck(ctx, msg.Source, b.cfg.Group, msg.ID)
		if msg.Source == b.keys.replay {
			p.XDel(ctx, b.keys.replay, msg.ID)
		}
		return nil
	})
	if err == nil {
		b.held.remove(msg)
	}
	return err
}

// Release leaves the entries pending: XAUTOCLAIM hands them to a live
// member after ClaimIdle.
func (s settler) Release(_ context.Context, msgs []consumer.Message) { s.b.held.remove(msgs...) }

func decodeHandlers(s string) []string {
	var names []string
	if json.Unmarshal([]byte(s), &names) != nil {
		return nil
	}
	return names
}

// admin is the dead-letter admin API of one group.
type admin struct{ b *Bus }

// replayScript moves one dead letter (ARGV[1]), every field kept, to the
// group's replay stream, unless it has the dropped-size field (ARGV[2]);
// in a script so that two admins replaying the same record cannot both
// deliver it. It returns one of the replay results below.
var replayScript = goredis.NewScript(`
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local fields = e[1][2]
for i = 1, #fields, 2 do
  if fields[i] == ARGV[2] then return 2 end
end
table.insert(fields, 'dlq_id')
table.insert(fields, ARGV[1])
redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
`)

// What replayScript did.
const (
	replayNotFound    = 0
	replayMoved       = 1
	replayBodyDropped = 2 // left in place: there are no bytes to deliver
)

// replayArgs are replayScript's keys and arguments for the record id.
func (a admin) replayArgs(id string) (keys []string, args []any) {
	return []string{a.b.keys.dlq, a.b.keys.replay}, []any{id, fieldDroppedSize}
}

func (a admin) List(ctx context.Context, after string, limit int) ([]consumer.DeadLetter, error) {
	start := "-"
	if after != "" {
		start = "(" + after
	}
	if limit <= 0 {
		limit = 100
	}
	msgs, err := a.b.client.XRangeN(ctx, a.b.keys.dlq, start, "+", int64(limit)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis bus: list dead letters: %w", err)
	}
	out := make([]consumer.DeadLetter, len(msgs))
	for i, m := range msgs {
		out[i] = parseDeadLetter(m)
	}
	return out, nil
}

func parseDeadLetter(m goredis.XMessage) consumer.DeadLetter {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	rec := consumer.DeadLetter{
		ID: m.ID, Reason: consumer.Reason(str(fieldReason)), Error: str(fieldError), Group: str(fieldGroup),
		Handlers: decodeHandlers(str(fieldHandlers)), EventID: str(fieldID), EventType: str(fieldType),
		AggregateType: str(fieldAggType), AggregateID: str(fieldAggID),
		Source: str(fieldSource), SourceID: str(fieldSourceID), Body: []byte(str(fieldEnvelope)),
	}
	rec.Attempts, _ = strconv.Atoi(str(fieldAttempts))
	rec.Version, _ = strconv.ParseInt(str(fieldVersion), 10, 64)
	rec.Time, _ = time.Parse(time.RFC3339Nano, str(fieldTime))
	if size := str(fieldDroppedSize); size != "" {
		rec.BodyDropped = true
		rec.Size, _ = strconv.Atoi(size)
	}
	return rec
}

func (a admin) Count(ctx context.Context) (int64, error) {
	n, err := a.b.client.XLen(ctx, a.b.keys.dlq).Result()
	if err != nil {
		return 0, fmt.Errorf("redis bus: count dead letters: %w", err)
	}
	return n, nil
}

func (a admin) Replay(ctx context.Context, id string) error {
	keys, args := a.replayArgs(id)
	n, err := replayScript.Run(ctx, a.b.client, keys, args...).Int()
	if err != nil {
		return fmt.Errorf("redis bus: replay dead letter %s: %w", id, err)
	}
	switch n {
	case replayNotFound:
		return fmt.Errorf("redis bus: dead letter %s of group %q: %w", id, a.b.cfg.Group, eventsource.ErrNotFound)
	case replayBodyDropped:
		return fmt.Errorf("redis bus: dead letter %s of group %q: %w", id, a.b.cfg.Group, consumer.ErrBodyDropped)
	}
	return nil
}

func (a admin) ReplayAll(ctx context.Context) (int, error) {
	last, err := a.b.client.XRevRangeN(ctx, a.b.keys.dlq, "+", "-", 1).Result()
	if err != nil || len(last) == 0 {
		return 0, err
	}
	// Only what is there now: replayed events that fail again come back
	// after last and wait for the next ReplayAll.
	end := last[0].ID
	if err := replayScript.Load(ctx, a.b.client).Err(); err != nil {
		return 0, fmt.Errorf("redis bus: replay dead letters: %w", err)
	}
	replayed := 0
	// Records without their body stay, so each page starts after the last
	// one examined rather than at the oldest left.
	for start := "-"; ; {
		msgs, err := a.b.client.XRangeN(ctx, a.b.keys.dlq, start, end, 100).Result()
		if err != nil {
			return replayed, fmt.Errorf("redis bus: replay dead letters: %w", err)
		}
		if len(msgs) == 0 {
			return replayed, nil
		}
		cmds, err := a.b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, m := range msgs {
				keys, args := a.replayArgs(m.ID)
				replayScript.EvalSha(ctx, p, keys, args...)
			}
			return nil
		})
		for _, c := range cmds {
			if n, _ := c.(*goredis.Cmd).Int(); n == replayMoved {
				replayed++
			}
		}
		if err != nil {
			return replayed, fmt.Errorf("redis bus: replay dead letters: %w", err)
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

func (a admin) Purge(ctx context.Context) (int64, error) {
	var n *goredis.IntCmd
	_, err := a.b.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		n = p.XLen(ctx, a.b.keys.dlq)
		p.Del(ctx, a.b.keys.dlq)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("redis bus: purge dead letters: %w", err)
	}
	return n.Val(), nil
}
