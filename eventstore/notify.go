package eventstore

import "sync"

// Notifier is implemented by stores that announce their appends, so that a
// follower that has caught up wakes as soon as an event is stored instead of
// at its next poll. The memory and SQLite stores announce the appends made
// through the same Store value; the PostgreSQL store also announces the
// appends of every process sharing the database (LISTEN/NOTIFY). Polling
// stays the fallback for what a store cannot see (another process writing
// to a SQLite file).
//
// A Follower subscribes by itself while Follow or FollowBatches runs.
type Notifier interface {
	// OnAppend calls fn after each append commits, with the position of
	// its last event (0 if unknown), until stop is called. fn runs on the
	// appender's goroutine or the store's listener: it must not block.
	OnAppend(fn func(head int64)) (stop func())
}

// Announcer is the list of subscribers a Notifier keeps. Stores embed it
// (or hold one) and call Announce after each commit. The zero value is
// ready to use; it is safe for concurrent use.
type Announcer struct {
	mu   sync.RWMutex
	subs map[uint64]func(int64)
	next uint64
	// changed, when set, is told the subscriber count after it changes,
	// under a lock of its own ordering (so a store can start and stop a
	// listener with the first and last subscriber).
	changed func(n int)
	chMu    sync.Mutex
}

// NewAnnouncer returns an Announcer that calls changed with the number of
// subscribers after each OnAppend and stop (nil: no call). Calls to changed
// do not overlap.
func NewAnnouncer(changed func(n int)) *Announcer {
	return &Announcer{changed: changed}
}

// OnAppend implements Notifier.
func (a *Announcer) OnAppend(fn func(head int64)) (stop func()) {
	a.chMu.Lock()
	defer a.chMu.Unlock()
	a.mu.Lock()
	if a.subs == nil {
		a.subs = make(map[uint64]func(int64))
	}
	id := a.next
	a.next++
	a.subs[id] = fn
	n := len(a.subs)
	a.mu.Unlock()
	if a.changed != nil {
		a.changed(n)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			a.chMu.Lock()
			defer a.chMu.Unlock()
			a.mu.Lock()
			delete(a.subs, id)
			n := len(a.subs)
			a.mu.Unlock()
			if a.changed != nil {
				a.changed(n)
			}
		})
	}
}

// Announce tells every subscriber that events up to head are stored.
func (a *Announcer) Announce(head int64) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, fn := range a.subs {
		fn(head)
	}
}

// Active reports whether anyone listens, so a store can skip the work of
// announcing to nobody.
func (a *Announcer) Active() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.subs) > 0
}
