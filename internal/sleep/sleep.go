// Package sleep waits for a duration or a context, whichever ends first:
// the backoff loops of the broker buses and the dispatcher all need it.
package sleep

import (
	"context"
	"time"
)

// For waits d and reports true, or reports false as soon as ctx ends.
func For(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
