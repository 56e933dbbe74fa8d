package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// clientOptions returns the options of a bus's go-redis clients: cfg's URL
// and TLS settings, plus two changes to go-redis's defaults.
//
//   - ContextTimeoutEnabled: without it go-redis ignores the deadline of a
//     call's ctx and waits out ReadTimeout and DialTimeout instead.
//   - A dialer whose errors carry the bus's logger, so that the lines
//     go-redis logs about them reach it (see routeGoRedisLog).
func clientOptions(cfg Config) (*goredis.Options, error) {
	opts, err := parseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.TLS != nil {
		opts.TLSConfig = cfg.TLS
	}
	opts.ContextTimeoutEnabled = true
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With(slog.String("bus", "redis"), slog.String("group", cfg.Group))
	if !cfg.KeepGoRedisLogger {
		routeGoRedisLog()
	}
	opts.Dialer = dialer(opts, log)
	return opts, nil
}

// dialer dials as go-redis's default dialer does, except that the TLS
// handshake honours ctx too (go-redis's stops only at DialTimeout), and
// that errors are *dialError, naming the bus's logger. It reads opts when
// it dials, after go-redis has set their defaults.
func dialer(opts *goredis.Options, log *slog.Logger) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := &net.Dialer{
			Timeout: opts.DialTimeout,
			// go-redis's defaults: notice a dead peer within a minute.
			KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3},
		}
		var conn net.Conn
		var err error
		if opts.TLSConfig == nil {
			conn, err = nd.DialContext(ctx, network, addr)
		} else {
			conn, err = (&tls.Dialer{NetDialer: nd, Config: opts.TLSConfig}).DialContext(ctx, network, addr)
		}
		if err != nil {
			return nil, &dialError{log: log, err: err}
		}
		return conn, nil
	}
}

// ping checks that c reaches Redis and returns by the end of ctx, whatever
// the socket does: a cancelled ctx does not interrupt a read in go-redis,
// only a deadline does. On error the caller closes c, which ends a ping
// still running. An error after ctx ended wraps ctx.Err().
func ping(ctx context.Context, c *goredis.Client) error {
	done := make(chan error, 1)
	go func() { done <- c.Ping(ctx).Err() }()
	select {
	case err := <-done:
		if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			return fmt.Errorf("%w (%w)", ctxErr(ctx), err)
		}
		return err
	case <-ctx.Done():
		return ctxErr(ctx)
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
