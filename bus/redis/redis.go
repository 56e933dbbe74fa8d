package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/internal/sleep"
)

// Field names of an events stream entry (see the package documentation).
const (
	fieldID       = "id"
	fieldType     = "type"
	fieldAggType  = "agg_type"
	fieldAggID    = "agg_id"
	fieldVersion  = "version"
	fieldEnvelope = "envelope"
	fieldHandlers = "handlers"
)

// Bus is the Redis Streams bus. It implements bus.Bus and
// bus.MultiTypeSubscriber.
type Bus struct {
	*consumer.Front // Subscribe, SubscribeTypes, SubscribeAll, Start, Stats
	closer          bus.CloseOnce
	gate            consumer.Gate
	cfg             Config
	log             *slog.Logger
	keys            keys
	codec           eventsource.JSONCodec
	xaddHead        []any // what every XADD of an event starts with (xaddArgs)

	client *goredis.Client // publishing, acks, claims, dead letters, admin
	// reader runs only the blocking XREADGROUP, on a pool of one
	// connection whose client ID Close passes to CLIENT UNBLOCK.
	reader          *goredis.Client
	readerID        atomic.Int64
	readerConnected atomic.Bool

	d        *consumer.Dispatcher
	counters consumer.Counters
	held     *inFlight

	loopCtx   context.Context
	stopLoops context.CancelFunc
	loops     sync.WaitGroup
}

var (
	_ bus.Bus                 = (*Bus)(nil)
	_ bus.MultiTypeSubscriber = (*Bus)(nil)
)

// New validates cfg, connects, and returns a bus. Nothing is read until
// Start.
func New(ctx context.Context, cfg Config) (*Bus, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts, err := clientOptions(cfg)
	if err != nil {
		return nil, err
	}
	b := &Bus{
		cfg:   cfg,
		log:   cfg.Logger.With(slog.String("bus", "redis"), slog.String("group", cfg.Group)),
		keys:  keysFor(cfg.StreamPrefix, cfg.Group),
		codec: eventsource.NewJSONCodec(cfg.Registry),
		held:  newInFlight(),
	}
	b.xaddHead = xaddArgs(b.keys.events, cfg.MaxLen)
	b.client = goredis.NewClient(opts)
	readerOpts := *opts
	readerOpts.PoolSize = 1
	readerOpts.MinIdleConns = 0
	readerOpts.MaxIdleConns = 1
	// No retry inside go-redis: an XREADGROUP sent again after its reply
	// was lost would return the entries after the lost ones, and the read
	// loop could not tell. A failed read surfaces, and the loop reads what
	// is pending here after the last entry it saw before reading on.
	readerOpts.MaxRetries = -1
	readerOpts.OnConnect = func(ctx context.Context, cn *goredis.Conn) error {
		if id, err := cn.ClientID(ctx).Result(); err == nil {
			b.readerID.Store(id)
		}
		// The reader's pool holds one connection, busy all the time: a new
		// one means the last was lost (go-redis may redial inside one call,
		// so the read loop does not always see an error).
		if b.readerConnected.Swap(true) {
			b.counters.Reconnects.Add(1)
		}
		return nil
	}
	b.reader = goredis.NewClient(&readerOpts)
	if err := ping(ctx, b.client); err != nil {
		_ = b.client.Close()
		_ = b.reader.Close()
		return nil, fmt.Errorf("redis bus: connect to %s: %w", cfg.RedactedURL(), err)
	}
	d, err := consumer.New(consumer.Config{
		Group: cfg.Group, Registry: cfg.Registry, Settler: settler{b}, Retry: cfg.Retry,
		Workers: cfg.Workers, MaxInFlight: cfg.MaxInFlight, Logger: b.log, Counters: &b.counters, Middleware: cfg.Middleware,
	})
	if err != nil {
		_ = b.client.Close()
		_ = b.reader.Close()
		return nil, err
	}
	b.d = d
	b.Front = consumer.NewFront(d, transport{b}, &b.gate)
	b.loopCtx, b.stopLoops = context.WithCancel(withGoRedisLogger(context.Background(), b.log))
	return b, nil
}

// Config returns the bus's configuration, defaults applied.
func (b *Bus) Config() Config { return b.cfg }

// transport starts the Redis side of consuming for the Front.
type transport struct{ b *Bus }

// StartConsuming creates the group on both streams, from their start, so
// that a group created late catches up on the backlog, then starts the
// read and claim loops.
func (t transport) StartConsuming(ctx context.Context) error {
	b := t.b
	if err := b.ensureGroups(ctx); err != nil {
		return fmt.Errorf("redis bus: start: %w", err)
	}
	b.loops.Go(b.readLoop)
	b.loops.Go(b.claimLoop)
	b.loops.Go(b.refreshLoop)
	return nil
}

// DeadLetters returns the admin API of this bus's group's dead letters.
func (b *Bus) DeadLetters() consumer.Admin { return admin{b} }

// Close stops reading, lets the handlers finish what was read, acks it,
// and closes the connections. Events waiting for a retry stay pending in
// Redis, for another member (or this group's next process) to claim. If
// ctx ends first it returns ctx.Err(); see consumer.Dispatcher.Close.
func (b *Bus) Close(ctx context.Context) error {
	return b.closer.Do(ctx, func() error { return b.close(ctx) })
}

func (b *Bus) close(ctx context.Context) error {
	shutErr := b.gate.Shut(ctx)

	b.stopLoops()
	err := b.waitLoops(ctx)
	if err == nil {
		err = b.d.Close(ctx)
	} else {
		_ = b.d.Close(ctx) // ctx is over: cancels handlers, releases the rest
	}
	if err == nil && b.Started() {
		b.forgetConsumer(ctx)
	}
	if err == nil && shutErr != nil {
		err = fmt.Errorf("redis bus: close: %w", shutErr)
	}
	return errors.Join(err, b.reader.Close(), b.client.Close())
}

// forgetConsumer removes this member from the group when it holds no
// pending entry, so that default names, unique per process, do not pile
// up in XINFO CONSUMERS. With entries pending (released at Close) it
// stays, and the entries wait for a claim.
func (b *Bus) forgetConsumer(ctx context.Context) {
	for _, stream := range []string{b.keys.events, b.keys.replay} {
		p, err := b.client.XPendingExt(ctx, &goredis.XPendingExtArgs{
			Stream: stream, Group: b.cfg.Group, Consumer: b.cfg.Consumer, Start: "-", End: "+", Count: 1,
		}).Result()
		if err != nil || len(p) > 0 {
			return
		}
	}
	for _, stream := range []string{b.keys.events, b.keys.replay} {
		_ = b.client.XGroupDelConsumer(ctx, stream, b.cfg.Group, b.cfg.Consumer).Err()
	}
}

// waitLoops waits for the read and claim loops, waking the reader from
// XREADGROUP BLOCK with CLIENT UNBLOCK (which returns an empty read, so
// no entry is delivered and lost) rather than waiting out Block.
func (b *Bus) waitLoops(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		b.loops.Wait()
		close(done)
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if id := b.readerID.Load(); id != 0 {
			_ = b.client.ClientUnblock(ctx, id).Err()
		}
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("redis bus: close: %w", ctx.Err())
		case <-tick.C: // the reader may have been between two reads: unblock again
		}
	}
}

// readLoop reads new entries of the events and replay streams and hands
// them to the dispatcher, until Close. It survives Redis restarts: errors
// are retried with backoff, and a missing group is created again.
func (b *Bus) readLoop() {
	ctx := b.loopCtx
	args := &goredis.XReadGroupArgs{
		Group: b.cfg.Group, Consumer: b.cfg.Consumer,
		Streams: []string{b.keys.events, b.keys.replay, ">", ">"},
		Count:   int64(b.cfg.ReadCount), Block: b.cfg.Block,
	}
	needGroups := false // StartConsuming created them; a Redis restart can lose them
	// First what this member's name holds pending already: a stable
	// Consumer's earlier process left it, and ">" never returns it. After
	// a failed read, what follows the last entry seen: a reply lost with
	// its connection left its entries pending here, unseen.
	history := true
	seen := [2]string{"0", "0"} // last entry read with ">", events and replay
	failing := false
	wait := 50 * time.Millisecond
	for ctx.Err() == nil {
		var streams []goredis.XStream
		err := error(nil)
		if needGroups {
			err = b.ensureGroups(ctx)
		}
		if err == nil && history {
			needGroups = false
			var closing bool
			closing, err = b.readHistory(ctx, &seen)
			if closing {
				return
			}
			history = err != nil
		} else if err == nil {
			needGroups = false
			streams, err = b.reader.XReadGroup(ctx, args).Result()
			if errors.Is(err, goredis.Nil) {
				err = nil
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if isNoGroup(err) {
				needGroups = true
			}
			history = true
			if !failing {
				b.log.LogAttrs(ctx, slog.LevelWarn, "reading from Redis failed; retrying",
					slog.String("url", b.cfg.RedactedURL()), slog.Any("error", err))
			}
			failing = true
			if !sleep.For(ctx, wait) {
				return
			}
			wait = min(wait*2, 2*time.Second)
			continue
		}
		if failing {
			failing = false
			wait = 50 * time.Millisecond
			b.log.LogAttrs(ctx, slog.LevelInfo, "reading from Redis again", slog.String("url", b.cfg.RedactedURL()))
		}
		for _, s := range streams {
			if n := len(s.Messages); n > 0 {
				seen[b.streamIndex(s.Stream)] = s.Messages[n-1].ID
			}
			msgs := make([]consumer.Message, len(s.Messages))
			for i, m := range s.Messages {
				msgs[i] = b.toMessage(s.Stream, m, 1)
			}
			if _, err := b.dispatch(ctx, msgs); err != nil {
				return // closing: the rest stays pending for a claim
			}
		}
	}
}

// readHistory dispatches the entries pending under this member's name on
// both streams after the IDs in seen (XREADGROUP history), with their
// delivery counts, and moves seen past them; entries this member holds
// already are skipped. An entry deleted or trimmed since it was read has
// nothing to deliver: it is acknowledged, as XAUTOCLAIM drops such
// entries. It reports whether the bus is closing.
func (b *Bus) readHistory(ctx context.Context, seen *[2]string) (closing bool, err error) {
	for i, stream := range []string{b.keys.events, b.keys.replay} {
		for {
			res, err := b.client.XReadGroup(ctx, &goredis.XReadGroupArgs{
				Group: b.cfg.Group, Consumer: b.cfg.Consumer, Streams: []string{stream, seen[i]},
				Count: int64(b.cfg.ReadCount), Block: -1, // history never blocks
			}).Result()
			if errors.Is(err, goredis.Nil) {
				err = nil
			}
			if err != nil {
				return false, err
			}
			if len(res) == 0 || len(res[0].Messages) == 0 {
				break
			}
			msgs := res[0].Messages
			var gone []string
			present := make([]goredis.XMessage, 0, len(msgs))
			for _, m := range msgs {
				if m.Values == nil {
					gone = append(gone, m.ID)
				} else {
					present = append(present, m)
				}
			}
			batch, err := b.pendingMessages(ctx, stream, present)
			if err != nil {
				return false, err
			}
			if len(gone) > 0 {
				if err := b.client.XAck(ctx, stream, b.cfg.Group, gone...).Err(); err != nil {
					return false, err
				}
			}
			if _, err := b.dispatch(ctx, batch); err != nil {
				return true, nil // the rest stays pending for a claim
			}
			seen[i] = msgs[len(msgs)-1].ID
		}
	}
	return false, nil
}

// pendingMessages turns entries already pending for this member (claimed,
// or read again from its history) into messages with their delivery
// counts.
func (b *Bus) pendingMessages(ctx context.Context, stream string, msgs []goredis.XMessage) ([]consumer.Message, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	counts, err := b.deliveryCounts(ctx, stream, msgs)
	if err != nil {
		return nil, err
	}
	batch := make([]consumer.Message, len(msgs))
	for i, m := range msgs {
		batch[i] = b.toMessage(stream, m, counts[m.ID])
	}
	return batch, nil
}

// streamIndex is 0 for the events stream, 1 for the replay stream.
func (b *Bus) streamIndex(stream string) int {
	if stream == b.keys.replay {
		return 1
	}
	return 0
}

// ensureGroups creates the group on both streams, from their start.
func (b *Bus) ensureGroups(ctx context.Context) error {
	for _, stream := range []string{b.keys.events, b.keys.replay} {
		err := b.client.XGroupCreateMkStream(ctx, stream, b.cfg.Group, "0").Err()
		if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return fmt.Errorf("create group %q on %s: %w", b.cfg.Group, stream, err)
		}
	}
	return nil
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// claimLoop takes over entries other members (or this group's earlier
// processes) left pending longer than ClaimIdle.
func (b *Bus) claimLoop() {
	ctx := b.loopCtx
	tick := time.NewTicker(b.cfg.ClaimInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, stream := range []string{b.keys.events, b.keys.replay} {
			if err := b.claim(ctx, stream); err != nil && ctx.Err() == nil && !isNoGroup(err) {
				b.log.LogAttrs(ctx, slog.LevelWarn, "claiming pending entries failed",
					slog.String("stream", stream), slog.Any("error", err))
			}
		}
	}
}

func (b *Bus) claim(ctx context.Context, stream string) error {
	start := "0-0"
	for {
		msgs, next, err := b.client.XAutoClaim(ctx, &goredis.XAutoClaimArgs{
			Stream: stream, Group: b.cfg.Group, Consumer: b.cfg.Consumer,
			MinIdle: b.cfg.ClaimIdle, Start: start, Count: int64(b.cfg.ReadCount),
		}).Result()
		if err != nil {
			return err
		}
		if len(msgs) > 0 {
			batch, err := b.pendingMessages(ctx, stream, msgs)
			if err != nil {
				return err
			}
			n, err := b.dispatch(ctx, batch)
			if n > 0 {
				b.log.LogAttrs(ctx, slog.LevelInfo, "claimed pending entries",
					slog.String("stream", stream), slog.Int("entries", n), slog.String("first", msgs[0].ID))
			}
			b.counters.Reclaimed.Add(uint64(n))
			if err != nil {
				return nil // closing
			}
		}
		if next == "0-0" || next == "" {
			return nil
		}
		start = next
	}
}

// deliveryCounts reads the delivery counts of claimed entries (XAUTOCLAIM
// does not return them).
func (b *Bus) deliveryCounts(ctx context.Context, stream string, msgs []goredis.XMessage) (map[string]int, error) {
	pend, err := b.client.XPendingExt(ctx, &goredis.XPendingExtArgs{
		Stream: stream, Group: b.cfg.Group, Consumer: b.cfg.Consumer,
		Start: msgs[0].ID, End: msgs[len(msgs)-1].ID, Count: int64(len(msgs) + b.cfg.MaxInFlight + 4096),
	}).Result()
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int, len(pend))
	for _, p := range pend {
		counts[p.ID] = int(p.RetryCount)
	}
	for _, m := range msgs {
		if counts[m.ID] == 0 {
			counts[m.ID] = 2 // claimed, so delivered at least twice
		}
	}
	return counts, nil
}

// toMessage turns a stream entry into a dispatcher message. A replay
// entry carries its record's fields, the origin among them.
func (b *Bus) toMessage(stream string, m goredis.XMessage, attempt int) consumer.Message {
	msg := consumer.Message{Source: stream, ID: m.ID, Attempt: attempt}
	msg.Key, _ = m.Values[fieldAggID].(string)
	msg.Type, _ = m.Values[fieldType].(string)
	if s, ok := m.Values[fieldEnvelope].(string); ok {
		msg.Body = []byte(s)
	}
	if h, ok := m.Values[fieldHandlers].(string); ok && h != "" {
		msg.Handlers = decodeHandlers(h)
	}
	if src, _ := m.Values[fieldSource].(string); src != "" && stream == b.keys.replay {
		id, _ := m.Values[fieldSourceID].(string)
		msg.Ref = origin{source: src, id: id}
	}
	return msg
}
