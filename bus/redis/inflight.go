package redis

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource/bus/consumer"
)

// inFlight is the set of entries this member has dispatched and not yet
// settled, per stream. A member never dispatches an entry it holds a second
// time (XAUTOCLAIM also returns a member's own idle entries), and it keeps
// the idle time of what it holds below ClaimIdle, so that a long handler
// or a wait for a retry does not let another member take the entry over.
type inFlight struct {
	mu  sync.Mutex
	ids map[string]map[string]struct{} // stream → entry IDs
}

func newInFlight() *inFlight { return &inFlight{ids: map[string]map[string]struct{}{}} }

// add records msgs as held, except those held already, and returns them.
func (f *inFlight) add(msgs []consumer.Message) []consumer.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.DeleteFunc(msgs, func(m consumer.Message) bool {
		held := f.ids[m.Source]
		if held == nil {
			held = map[string]struct{}{}
			f.ids[m.Source] = held
		}
		if _, dup := held[m.ID]; dup {
			return true
		}
		held[m.ID] = struct{}{}
		return false
	})
}

// remove forgets settled entries.
func (f *inFlight) remove(msgs ...consumer.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range msgs {
		delete(f.ids[m.Source], m.ID)
	}
}

// snapshot returns the IDs held on stream.
func (f *inFlight) snapshot(stream string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.ids[stream]))
	for id := range f.ids[stream] {
		ids = append(ids, id)
	}
	return ids
}

// refreshLoop resets the idle time of the held entries every ClaimIdle/4,
// for those idle ClaimIdle/4 or more: an entry's idle time stays under
// ClaimIdle/2 while this member holds it, and the delivery count is not
// touched (XCLAIM JUSTID).
func (b *Bus) refreshLoop() {
	ctx := b.loopCtx
	every := b.cfg.ClaimIdle / 4
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, stream := range []string{b.keys.events, b.keys.replay} {
			for ids := range slices.Chunk(b.held.snapshot(stream), 1000) {
				err := b.client.XClaimJustID(ctx, &goredis.XClaimArgs{
					Stream: stream, Group: b.cfg.Group, Consumer: b.cfg.Consumer, MinIdle: every, Messages: ids,
				}).Err()
				if err != nil && ctx.Err() == nil {
					b.log.LogAttrs(ctx, slog.LevelWarn, "keeping held entries from being claimed failed; will try again",
						slog.String("stream", stream), slog.Int("entries", len(ids)), slog.Any("error", err))
				}
			}
		}
	}
}

// dispatch hands msgs this member does not hold already to the
// dispatcher, and returns how many it dispatched.
func (b *Bus) dispatch(ctx context.Context, msgs []consumer.Message) (int, error) {
	msgs = b.held.add(msgs)
	n, err := b.d.DispatchBatch(ctx, msgs)
	if n < len(msgs) {
		b.held.remove(msgs[n:]...) // not dispatched: left pending for a claim
	}
	return n, err
}
