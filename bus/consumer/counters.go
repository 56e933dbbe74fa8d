package consumer

import (
	"sync/atomic"

	"github.com/eventsource-go/eventsource/bus"
)

// Counters are the transport's side of bus.Stats; the Dispatcher counts
// the rest. Buses add them with AddTo.
type Counters struct {
	Published  atomic.Uint64
	Reclaimed  atomic.Uint64
	Reconnects atomic.Uint64
}

// AddTo adds the counters to st.
func (c *Counters) AddTo(st *bus.Stats) {
	st.Published += c.Published.Load()
	st.Reclaimed += c.Reclaimed.Load()
	st.Reconnects += c.Reconnects.Load()
}
