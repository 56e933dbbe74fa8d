package sqlite

import "github.com/eventsource-go/eventsource/eventstore"

var _ eventstore.Notifier = (*Store)(nil)

// OnAppend implements eventstore.Notifier: fn is called after each Append
// through this Store commits, with the position of its last event. Appends
// by other processes sharing the file are not announced; followers find
// them at their next poll.
func (s *Store) OnAppend(fn func(head int64)) (stop func()) { return s.notify.OnAppend(fn) }
