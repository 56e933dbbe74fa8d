package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// dialContext opens an AMQP connection, returning by the end of ctx or of
// timeout (Config.DialTimeout), whichever comes first: the TCP dial, the
// TLS handshake and the AMQP handshake alike.
//
// amqp091 takes no context; it bounds the handshakes with a deadline on
// the socket, which the dialer sets, and clears once the connection is
// open. So the deadline is the earlier of ctx's and timeout's, and a ctx
// cancelled without a deadline moves it to the past.
//
// A wrong password is one case that needs it: amqp091 (v1.16) does not
// advertise the authentication_failure_close capability, so RabbitMQ does
// not refuse the credentials but closes the socket, silently, after a
// delay (3s by default); amqp091 reports that as amqp.ErrCredentials.
//
// When ctx or timeout ended first, the error wraps ctx.Err() or
// context.DeadlineExceeded, not the error amqp091 made of the closed
// socket (which, during the credentials' step, is amqp.ErrCredentials even
// for a broker that was merely slow).
func dialContext(ctx context.Context, url string, cfg amqp.Config, timeout time.Duration) (*amqp.Connection, error) {
	cause := fmt.Errorf("DialTimeout (%v) elapsed: %w", timeout, context.DeadlineExceeded)
	dctx, cancel := context.WithTimeoutCause(ctx, timeout, cause)
	defer cancel()
	deadline, _ := dctx.Deadline()

	var mu sync.Mutex
	var raw net.Conn   // the socket, once dialed
	cancelled := false // dctx ended
	cfg.Dial = func(network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if cancelled {
			_ = conn.Close()
			return nil, context.Cause(dctx)
		}
		if err := conn.SetDeadline(deadline); err != nil {
			_ = conn.Close()
			return nil, err
		}
		raw = conn
		return conn, nil
	}
	stop := context.AfterFunc(dctx, func() {
		mu.Lock()
		defer mu.Unlock()
		cancelled = true
		if raw != nil {
			_ = raw.SetDeadline(time.Unix(1, 0)) // fails the handshake's pending read or write now
		}
	})

	conn, err := amqp.DialConfig(url, cfg)
	// dctx ended before DialConfig returned; the socket's deadline can
	// fire a moment before dctx's timer does.
	ended := !stop() || !time.Now().Before(deadline)
	mu.Lock()
	dialed := raw != nil
	if err != nil && dialed {
		_ = raw.Close() // amqp091 does not close it on every failure
	}
	mu.Unlock()
	switch {
	case err == nil && !ended:
		return conn, nil
	case err == nil:
		// Opened as dctx ended, whose deadline may have hit the socket.
		_ = conn.CloseDeadline(time.Now())
	case !ended || fromBroker(err):
		return nil, err
	}
	what := "AMQP handshake: no answer from the broker"
	switch {
	case err == nil:
		what = "AMQP handshake finished too late"
	case !dialed:
		what = "TCP connect"
	case errors.Is(err, amqp.ErrCredentials):
		what = "AMQP handshake: no answer to the credentials (RabbitMQ answers wrong ones only after a delay)"
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%s: %w", what, ctxErr(ctx))
	}
	return nil, fmt.Errorf("%s: %w", what, cause)
}

// fromBroker reports an error the broker sent (a connection.close), rather
// than one amqp091 made up from a failed socket.
func fromBroker(err error) bool {
	var aerr *amqp.Error
	return errors.As(err, &aerr) && aerr.Server
}

// guardConn closes conn if ctx ends before release is called. amqp091's
// channel opens and declares take no context: without it a broker that
// stalls after the handshake would hold the connect past its ctx. release
// returns err, or, when ctx ended first, an error wrapping ctx.Err() (and
// err).
func guardConn(ctx context.Context, conn *amqp.Connection) (release func(err error) error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.CloseDeadline(time.Now()) })
	return func(err error) error {
		if stop() {
			return err
		}
		if err == nil {
			return fmt.Errorf("rabbitmq bus: connection closed as its ctx ended: %w", ctxErr(ctx))
		}
		return fmt.Errorf("%w (%w)", ctxErr(ctx), err)
	}
}

// ctxErr is ctx.Err(), with ctx's cause when it was given one.
func ctxErr(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}
