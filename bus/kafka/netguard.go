package kafka

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/eventsource-go/eventsource/bus"
)

// errCutOff is what the bus's connections fail with once Close has cut
// them off. kafka-go does not retry it: it is neither a temporary error
// nor one of the network errors kafka-go takes as transient.
var errCutOff = fmt.Errorf("kafka bus: connection cut off by Close: %w", bus.ErrClosed)

// netGuard dials the bus's broker connections (the Writer's and the admin
// client's transport, the consumer group's and the readers' dialer) and
// can cut them all off. kafka-go cancels nothing it has sent: a request
// waits for its reply or its own timeout (10s for a write) whatever its
// caller's ctx, the Writer retries a failed write on its own, and
// Writer.Close waits for all of that. When Close gives up, closing the
// sockets and refusing new ones is what ends that work.
type netGuard struct {
	dialer net.Dialer
	cut    context.Context // done once cutOff ran
	cancel context.CancelFunc

	mu    sync.Mutex
	conns map[*guardedConn]struct{} // nil once cut off
}

func newNetGuard(dialTimeout time.Duration) *netGuard {
	g := &netGuard{dialer: net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}, conns: map[*guardedConn]struct{}{}}
	g.cut, g.cancel = context.WithCancel(context.Background())
	return g
}

// DialContext dials as net.Dialer does; a dial still running when the
// guard cuts off ends then.
func (g *netGuard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if g.cut.Err() != nil {
		return nil, errCutOff
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(g.cut, cancel)()
	c, err := g.dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, g.failure(err)
	}
	gc := &guardedConn{Conn: c, g: g}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conns == nil {
		_ = c.Close()
		return nil, errCutOff
	}
	g.conns[gc] = struct{}{}
	return gc, nil
}

// cutOff closes every connection and fails every dial from now on. It
// can be called more than once.
func (g *netGuard) cutOff() {
	g.cancel()
	g.mu.Lock()
	conns := g.conns
	g.conns = nil
	g.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

// failure is err, or errCutOff once the guard has cut off: a closed
// socket's error says nothing of why it was closed.
func (g *netGuard) failure(err error) error {
	if err != nil && g.cut.Err() != nil {
		return errCutOff
	}
	return err
}

// guardedConn is a connection the guard can close.
type guardedConn struct {
	net.Conn
	g *netGuard
}

func (c *guardedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	return n, c.g.failure(err)
}

func (c *guardedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	return n, c.g.failure(err)
}

func (c *guardedConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c)
	c.g.mu.Unlock()
	return c.Conn.Close()
}
