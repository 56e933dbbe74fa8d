package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// go-redis (v9.23) logs through one process-wide logger, set with
// goredis.SetLogger; there is no per-client option. Its default writes
// unstructured lines to stderr, dozens a second while Redis is down. So
// New installs, once per process, logRouter, which sends each line to the
// logger of the bus it concerns and every other line (of the
// application's own go-redis clients, say) to slog.Default(). A line
// concerns a bus when
//
//   - one of its arguments is, or wraps, a *dialError: the bus's dialer
//     returns them, and the lines an outage produces ("failed to dial
//     after 5 attempts: …") carry the dial error; or
//   - its context carries the bus's logger (withGoRedisLogger), as the
//     contexts of the bus's own calls can.
//
// Config.KeepGoRedisLogger leaves go-redis's logger alone, for an
// application that sets its own.

var routeOnce sync.Once

// routeGoRedisLog installs logRouter as go-redis's logger, once.
func routeGoRedisLog() {
	routeOnce.Do(func() { goredis.SetLogger(logRouter{}) })
}

// logRouter is go-redis's logger while buses run (see above).
type logRouter struct{}

func (logRouter) Printf(ctx context.Context, format string, args ...any) {
	if ctx == nil {
		ctx = context.Background()
	}
	log := ownerOf(ctx, args)
	if !log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	msg := strings.TrimSpace(strings.TrimPrefix(fmt.Sprintf(format, args...), "redis: "))
	// Warn, as the Kafka bus logs kafka-go: go-redis logs what it retries
	// or works around, not what the bus fails at.
	log.LogAttrs(ctx, slog.LevelWarn, "go-redis: "+msg)
}

// ownerOf returns the logger of the bus a go-redis line concerns, or
// slog.Default().
func ownerOf(ctx context.Context, args []any) *slog.Logger {
	for _, a := range args {
		if err, ok := a.(error); ok {
			var de *dialError
			if errors.As(err, &de) {
				return de.log
			}
		}
	}
	if log, ok := ctx.Value(logKey{}).(*slog.Logger); ok {
		return log
	}
	return slog.Default()
}

type logKey struct{}

// withGoRedisLogger returns ctx carrying log, so that what go-redis logs
// during the calls made with it goes to log.
func withGoRedisLogger(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, logKey{}, log)
}

// dialError is a failed dial of a bus's client. It reads as the error it
// wraps, and names the bus's logger for logRouter. It is a net.Error, as
// the dial error itself is, for go-redis's error classification.
type dialError struct {
	log *slog.Logger
	err error
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func (e *dialError) Timeout() bool {
	var ne net.Error
	return errors.As(e.err, &ne) && ne.Timeout()
}

// Temporary is part of net.Error; it reports Timeout, as net's errors do.
func (e *dialError) Temporary() bool { return e.Timeout() }
