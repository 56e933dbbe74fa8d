package postgres

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/internal/sleep"
)

// NotifyChannel is the channel on which Append announces each commit with
// NOTIFY, in the same transaction, so that every process's followers wake
// at once. The payload is "<schema>:<position of the last event>": stores
// in different schemas of one database share the channel and ignore each
// other's announcements.
const NotifyChannel = "eventsource_appends"

const notifySQL = `SELECT pg_notify('` + NotifyChannel + `', current_schema() || ':' || $1::bigint::text)`

// WithoutNotify stops Append from sending NOTIFY. Followers in other
// processes then find new events at their next poll only.
func WithoutNotify() Option {
	return func(s *Store) { s.noNotify = true }
}

var _ eventstore.Notifier = (*Store)(nil)

// OnAppend implements eventstore.Notifier: fn is called after each Append
// through this Store commits and, while anyone subscribes, for each
// append any process commits to the same schema (LISTEN on a connection
// taken from the pool for as long as there are subscribers).
func (s *Store) OnAppend(fn func(head int64)) (stop func()) {
	return s.listen.announce.OnAppend(fn)
}

// listening runs one LISTEN connection per Store while it has subscribers.
type listening struct {
	announce *eventstore.Announcer
	mu       sync.Mutex
	stop     context.CancelFunc
	done     chan struct{}
}

func (l *listening) init(s *Store) {
	l.announce = eventstore.NewAnnouncer(func(n int) {
		l.mu.Lock()
		defer l.mu.Unlock()
		switch {
		case n > 0 && l.stop == nil:
			ctx, cancel := context.WithCancel(context.Background())
			l.stop, l.done = cancel, make(chan struct{})
			go func(done chan struct{}) {
				defer close(done)
				s.listenLoop(ctx)
			}(l.done)
		case n == 0 && l.stop != nil:
			l.stop()
			<-l.done
			l.stop, l.done = nil, nil
		}
	})
}

// listenLoop keeps a listener connection until ctx ends, reconnecting with
// backoff after a failure.
func (s *Store) listenLoop(ctx context.Context) {
	wait := 50 * time.Millisecond
	for ctx.Err() == nil {
		if s.listenOnce(ctx) {
			wait = 50 * time.Millisecond
		}
		if !sleep.For(ctx, wait) {
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// listenOnce listens until an error or ctx ends; it reports whether it
// got as far as listening.
func (s *Store) listenOnce(ctx context.Context) bool {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return false
	}
	// A connection in LISTEN mode must not go back to the pool.
	conn := pc.Hijack()
	defer conn.Close(context.Background()) //nolint:errcheck // closing a listener
	var schema string
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return false
	}
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return false
	}
	// What was appended while nobody listened is found by a pass now.
	s.listen.announce.Announce(0)
	prefix := schema + ":"
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true
		}
		rest, ok := strings.CutPrefix(n.Payload, prefix)
		if !ok {
			continue
		}
		head, _ := strconv.ParseInt(rest, 10, 64)
		s.listen.announce.Announce(head)
	}
}
