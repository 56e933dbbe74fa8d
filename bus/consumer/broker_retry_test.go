package consumer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// reschedulingSettler plays a broker with a delay queue: a rescheduled
// message comes back through Dispatch with the attempt count and handler
// names a transport would carry in headers.
type reschedulingSettler struct {
	*fakeSettler
	d       atomic.Pointer[Dispatcher]
	mu      sync.Mutex
	retries []Retry
}

func (r *reschedulingSettler) Reschedule(_ context.Context, msg Message, retry Retry) error {
	r.mu.Lock()
	r.retries = append(r.retries, retry)
	r.mu.Unlock()
	msg.Attempt = retry.Attempts + 1
	msg.Handlers = retry.Handlers
	go func() {
		// As a broker would, deliver again later, on another goroutine.
		_ = r.d.Load().Dispatch(context.Background(), msg)
	}()
	return nil
}

func TestBrokerRetriesRescheduleOnlyFailedHandlers(t *testing.T) {
	settler := &reschedulingSettler{fakeSettler: newSettler()}
	d, err := New(Config{
		Group: "g", Registry: registry(), Settler: settler, BrokerRetries: true,
		Retry:  RetryPolicy{MaxRetries: 3, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Multiplier: 2},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	settler.d.Store(d)
	t.Cleanup(func() { _ = d.Close(context.Background()) })

	var flakyCalls atomic.Int32
	flaky := &recorder{fail: func(eventsource.Envelope) error {
		if flakyCalls.Add(1) < 3 {
			return errors.New("transient")
		}
		return nil
	}}
	healthy := &recorder{}
	if _, err := d.Subscribe("Ping", flaky, bus.WithName("flaky")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Subscribe("Ping", healthy, bus.WithName("healthy")); err != nil {
		t.Fatal(err)
	}
	broken := &recorder{fail: func(eventsource.Envelope) error { return errors.New("always") }}
	if _, err := d.Subscribe("Pong", broken, bus.WithName("broken")); err != nil {
		t.Fatal(err)
	}
	dispatch(t, d, message(t, envelope("a", 1, Ping{1})), message(t, envelope("b", 1, Pong{2})))
	waitUntil(t, "ack of the ping and dead letter of the pong", func() bool {
		a, dead, _ := settler.snapshot()
		return len(a) == 1 && len(dead) == 1
	})
	drain(t, d)
	if healthy.len() != 1 || flaky.len() != 1 || flakyCalls.Load() != 3 {
		t.Errorf("healthy ran %d times, flaky succeeded %d times after %d calls; want 1, 1, 3",
			healthy.len(), flaky.len(), flakyCalls.Load())
	}
	_, dead, _ := settler.snapshot()
	if dead[0].Reason != ReasonMaxRetries || dead[0].Attempts != 3 || len(dead[0].Handlers) != 1 || dead[0].Handlers[0] != "broken" {
		t.Errorf("dead letter = %+v; want max_retries after 3 attempts by 'broken'", dead[0])
	}
	settler.mu.Lock()
	defer settler.mu.Unlock()
	// Ping: two reschedules for flaky; Pong: two before the third attempt fails for good.
	if len(settler.retries) != 4 {
		t.Fatalf("%d reschedules, want 4: %+v", len(settler.retries), settler.retries)
	}
	for _, r := range settler.retries {
		if len(r.Handlers) != 1 || r.Delay <= 0 || r.Error == "" {
			t.Errorf("reschedule %+v: want one handler, a delay and the error", r)
		}
	}
	if st := d.Stats(); st.Retries != 4 || st.DeadLettered != 1 {
		t.Errorf("stats: retries %d, dead-lettered %d; want 4, 1", st.Retries, st.DeadLettered)
	}
}

func TestBrokerRetriesNeedRescheduler(t *testing.T) {
	_, err := New(Config{Registry: registry(), Settler: newSettler(), BrokerRetries: true})
	if err == nil {
		t.Fatal("BrokerRetries accepted a Settler without Reschedule")
	}
}
