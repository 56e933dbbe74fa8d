package redis

import (
	"context"
	"fmt"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource/bus"
)

var _ bus.LagReporter = (*Bus)(nil)

// Lag returns the group's backlog (entries not yet delivered to it, Redis's
// stream lag) and pending entries (delivered and not acknowledged), summed
// over the events stream and the replay stream, from XINFO GROUPS and XLEN
// in one round trip. Before Start has created the group, the backlog is
// the streams' length: the group reads them from their start. The
// backlog is left out when Redis cannot tell it (entries deleted or
// trimmed in the range the group has not read).
func (b *Bus) Lag(ctx context.Context) ([]bus.Lag, error) {
	streams := []string{b.keys.events, b.keys.replay}
	infos := make([]*goredis.XInfoGroupsCmd, len(streams))
	lens := make([]*goredis.IntCmd, len(streams))
	_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, s := range streams {
			infos[i] = p.XInfoGroups(ctx, s)
			lens[i] = p.XLen(ctx, s)
		}
		return nil
	})
	if err != nil && !isNoKey(err) {
		return nil, fmt.Errorf("redis bus: lag of group %q: %w", b.cfg.Group, err)
	}
	var backlog, pending int64
	backlogKnown := true
	for i, stream := range streams {
		groups, err := infos[i].Result()
		if isNoKey(err) {
			continue // nothing published there yet
		}
		if err != nil {
			return nil, fmt.Errorf("redis bus: groups of %s: %w", stream, err)
		}
		g, ok := findGroup(groups, b.cfg.Group)
		if !ok {
			n, err := lens[i].Result()
			if err != nil {
				return nil, fmt.Errorf("redis bus: length of %s: %w", stream, err)
			}
			backlog += n
			continue
		}
		pending += g.Pending
		if g.Lag < 0 {
			backlogKnown = false
		}
		backlog += g.Lag
	}
	out := []bus.Lag{{Kind: bus.LagPending, Messages: pending}}
	if backlogKnown {
		out = append(out, bus.Lag{Kind: bus.LagBacklog, Messages: backlog})
	}
	return out, nil
}

func findGroup(groups []goredis.XInfoGroup, name string) (goredis.XInfoGroup, bool) {
	for _, g := range groups {
		if g.Name == name {
			return g, true
		}
	}
	return goredis.XInfoGroup{}, false
}

// isNoKey reports Redis's answer about a stream that does not exist.
func isNoKey(err error) bool { return err != nil && strings.Contains(err.Error(), "no such key") }
