package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource/bus/consumer"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/internal/redact"
)

// redisBroker reads the keys the redis package documents ({prefix}:events,
// {prefix}:dlq:<group>) directly for what its admin API does not offer.
type redisBroker struct {
	e      *env
	raw    *goredis.Client
	buses  busCache[*redisbus.Bus]
	events string
}

func newRedisBroker(ctx context.Context, e *env, logger *slog.Logger) (*redisBroker, error) {
	opts, err := goredis.ParseURL(e.redisURL)
	if err != nil {
		return nil, usagef("-redis-url %s does not parse", redact.URL(e.redisURL))
	}
	b := &redisBroker{e: e, raw: goredis.NewClient(opts), events: "{" + e.prefix + "}:events"}
	if err := b.raw.Ping(ctx).Err(); err != nil {
		_ = b.raw.Close()
		return nil, fmt.Errorf("redis %s: %w", redact.URL(e.redisURL), err)
	}
	b.buses.open = func(ctx context.Context, group string) (*redisbus.Bus, error) {
		return redisbus.New(ctx, redisbus.Config{
			URL: e.redisURL, Registry: emptyRegistry(), StreamPrefix: e.prefix, Group: group,
			Logger: logger, KeepGoRedisLogger: true,
		})
	}
	return b, nil
}

func (b *redisBroker) kind() string { return "redis" }
func (b *redisBroker) where() string {
	return fmt.Sprintf("redis %s stream %s", redact.URL(b.e.redisURL), b.events)
}

func (b *redisBroker) dlqKey(group string) string { return "{" + b.e.prefix + "}:dlq:" + group }

func (b *redisBroker) groups(ctx context.Context) ([]string, error) {
	var out []string
	infos, err := b.raw.XInfoGroups(ctx, b.events).Result()
	if err != nil && !isNoKey(err) {
		return nil, fmt.Errorf("redis: groups of %s: %w", b.events, err)
	}
	for _, g := range infos {
		out = append(out, g.Name)
	}
	prefix := b.dlqKey("")
	it := b.raw.Scan(ctx, 0, prefix+"*", 100).Iterator()
	for it.Next(ctx) {
		out = append(out, strings.TrimPrefix(it.Val(), prefix))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("redis: scan dead-letter keys: %w", err)
	}
	return out, nil
}

func isNoKey(err error) bool { return err != nil && strings.Contains(err.Error(), "no such key") }

func (b *redisBroker) admin(ctx context.Context, group string) (consumer.Admin, error) {
	bus, err := b.buses.get(ctx, group)
	if err != nil {
		return nil, err
	}
	return bus.DeadLetters(), nil
}

func (b *redisBroker) remove(ctx context.Context, group string, recs []consumer.DeadLetter) (int, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	n, err := b.raw.XDel(ctx, b.dlqKey(group), ids...).Result()
	if err != nil {
		return 0, fmt.Errorf("redis: delete dead letters of %q: %w", group, err)
	}
	return int(n), nil
}

func (b *redisBroker) stats(ctx context.Context, group string) (groupStats, error) {
	st := groupStats{Bus: "redis", Group: group, Backlog: -1, Pending: -1, Retrying: 0, Consumers: 0}
	n, err := b.raw.XLen(ctx, b.events).Result()
	if err != nil {
		return st, fmt.Errorf("redis: %w", err)
	}
	st.Events = n
	infos, err := b.raw.XInfoGroups(ctx, b.events).Result()
	if err != nil && !isNoKey(err) {
		return st, fmt.Errorf("redis: groups of %s: %w", b.events, err)
	}
	for _, g := range infos {
		if g.Name == group {
			st.Backlog, st.Pending, st.Consumers = g.Lag, g.Pending, g.Consumers
		}
	}
	if st.DeadLetters, err = b.raw.XLen(ctx, b.dlqKey(group)).Result(); err != nil {
		return st, fmt.Errorf("redis: %w", err)
	}
	return st, nil
}

// tail reads the events stream with plain XREAD, outside any consumer
// group: no group is created, nothing is acknowledged or left pending.
func (b *redisBroker) tail(ctx context.Context, ready func(), fn func(rawEvent)) error {
	last := "0-0"
	msgs, err := b.raw.XRevRangeN(ctx, b.events, "+", "-", 1).Result()
	if err != nil {
		return fmt.Errorf("redis: tail %s: %w", b.events, err)
	}
	if len(msgs) > 0 {
		last = msgs[0].ID
	}
	ready()
	for ctx.Err() == nil {
		res, err := b.raw.XRead(ctx, &goredis.XReadArgs{Streams: []string{b.events, last}, Count: 256, Block: time.Second}).Result()
		if err == goredis.Nil {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("redis: tail %s: %w", b.events, err)
		}
		for _, s := range res {
			for _, m := range s.Messages {
				last = m.ID
				body, _ := m.Values["envelope"].(string)
				ev, err := decodeEnvelope([]byte(body))
				if err != nil {
					ev.Type, _ = m.Values["type"].(string)
				}
				ev.Source = b.events + " " + m.ID
				fn(ev)
			}
		}
	}
	return nil
}

func (b *redisBroker) close() {
	b.buses.closeAll()
	_ = b.raw.Close()
}
