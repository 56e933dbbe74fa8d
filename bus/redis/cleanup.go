package redis

import (
	"context"

	goredis "github.com/redis/go-redis/v9"
)

// DeleteKeys deletes every key of the buses with this stream prefix (the
// events stream, and each group's replay and dead-letter streams) and
// returns how many it deleted: the cleanup of a tool, or of a test that
// ran buses under a prefix of its own. Keys of other prefixes are left
// alone. Buses still open on the prefix write their keys again.
func DeleteKeys(ctx context.Context, c goredis.UniversalClient, prefix string) (int, error) {
	n := 0
	iter := c.Scan(ctx, 0, KeyPattern(prefix), 100).Iterator()
	for iter.Next(ctx) {
		if err := c.Del(ctx, iter.Val()).Err(); err != nil {
			return n, err
		}
		n++
	}
	return n, iter.Err()
}
