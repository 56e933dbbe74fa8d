package redis

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/internal/uuidtext"
)

// Publish appends events to the stream, several in one pipeline, and
// returns once Redis has them. An invalid envelope fails the whole call
// before anything is sent.
func (b *Bus) Publish(ctx context.Context, events ...eventsource.Envelope) error {
	if ok, err := b.gate.EnterPublish(events); !ok {
		return err
	}
	defer b.gate.Leave()
	// Each XADD's arguments point into events and into per-call arrays
	// instead of holding boxed copies: a string or []byte put in an `any`
	// costs an allocation, a pointer does not, and go-redis writes
	// *string, *int64 and encoding.BinaryMarshaler as their values. The
	// pointers live until the pipeline returns.
	head := b.xaddHead
	per := len(head) + 12
	args := make([]any, 0, per*len(events))
	ids := make([]idText, len(events))
	bodies := make([]bytesArg, len(events))
	cmds := make([]*goredis.StringCmd, len(events))
	for i := range events {
		env := &events[i]
		data, err := b.codec.Marshal(*env)
		if err != nil {
			return err
		}
		ids[i].set(env.ID)
		bodies[i] = data
		n := len(args)
		args = append(args, head...)
		args = append(args,
			fieldID, &ids[i], fieldType, &env.Type, fieldAggType, &env.AggregateType,
			fieldAggID, &env.AggregateID, fieldVersion, &env.Version, fieldEnvelope, &bodies[i])
		cmds[i] = goredis.NewStringCmd(ctx, args[n:len(args):len(args)]...)
	}
	if len(cmds) == 1 {
		if err := b.client.Process(ctx, cmds[0]); err != nil {
			return fmt.Errorf("redis bus: publish: %w", err)
		}
		b.counters.Published.Add(1)
		return nil
	}
	_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, c := range cmds {
			_ = p.Process(ctx, c) // queued; Exec reports errors
		}
		return nil
	})
	var ok uint64
	for _, c := range cmds {
		if c.Err() == nil {
			ok++
		}
	}
	b.counters.Published.Add(ok)
	if err != nil {
		return fmt.Errorf("redis bus: publish: %d of %d events appended: %w", ok, len(events), err)
	}
	return nil
}

// xaddArgs returns the arguments every XADD of the events stream starts
// with, boxed once for the bus's life.
func xaddArgs(stream string, maxLen int64) []any {
	args := []any{"xadd", stream}
	if maxLen > 0 {
		args = append(args, "maxlen", "~", maxLen)
	}
	return append(args, "*")
}

// idText is an event ID in its canonical text form, written into an array
// the call owns rather than a fresh string.
type idText [36]byte

func (t *idText) set(id uuid.UUID) { uuidtext.Append(t[:0], id) }

// MarshalBinary makes go-redis write the text as a bulk string.
func (t *idText) MarshalBinary() ([]byte, error) { return t[:], nil }

// bytesArg is an argument go-redis writes as is.
type bytesArg []byte

// MarshalBinary makes go-redis write the bytes as a bulk string.
func (a *bytesArg) MarshalBinary() ([]byte, error) { return *a, nil }

var _ bus.RawPublisher = (*Bus)(nil)

// PublishesRaw marks the bus as one that encodes what it publishes, so
// the outbox relay hands it stored payloads undecoded (bus.RawPublisher).
func (*Bus) PublishesRaw() {}
