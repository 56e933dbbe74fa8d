package bus

import (
	"context"
	"sync"
)

// CloseOnce makes a Close method idempotent and safe to call concurrently,
// as Bus requires: the first call runs the close function, and every other
// call waits for that outcome (or for its own context to end) and returns
// it. The zero value is ready to use.
type CloseOnce struct {
	mu      sync.Mutex
	started bool
	done    chan struct{}
	err     error
}

// Do runs closeFn on the first call and returns its error; later calls
// return the same error once the first has finished.
func (c *CloseOnce) Do(ctx context.Context, closeFn func() error) error {
	c.mu.Lock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	first := !c.started
	c.started = true
	c.mu.Unlock()
	if !first {
		select {
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer close(c.done)
	c.err = closeFn()
	return c.err
}
