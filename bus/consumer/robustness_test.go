package consumer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

// Boom's decoding panics on a payload it does not expect, as a hand-written
// UnmarshalJSON may.
type Boom struct{ N int }

func (Boom) EventType() string { return "Boom" }

func (b *Boom) UnmarshalJSON(data []byte) error {
	if string(data) == `{"N":13}` {
		panic("unlucky payload")
	}
	b.N = len(data)
	return nil
}

// A payload whose decoding panics is malformed, like any other payload that
// does not decode: it is dead-lettered, the process survives, and the
// events behind it on the same worker are handled. This holds whether the
// transport knows the key (decoded on the worker) or not (decoded in
// DispatchBatch, on the transport's goroutine).
func TestDecodePanicDeadLettered(t *testing.T) {
	s := newSettler()
	reg := registry()
	eventsource.MustRegister[Boom](reg)
	d, err := New(Config{Group: "g", Registry: reg, Settler: s, Workers: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	rec := &recorder{}
	if _, err := d.SubscribeAll(rec); err != nil {
		t.Fatal(err)
	}
	keyed := message(t, envelope("a", 1, Boom{N: 13}))
	unkeyed := message(t, envelope("b", 1, Boom{N: 13}))
	unkeyed.Key = ""
	dispatch(t, d, keyed, message(t, envelope("a", 2, Ping{})))
	dispatch(t, d, unkeyed, message(t, envelope("b", 2, Ping{})))
	waitUntil(t, "two dead letters and two acks", func() bool { a, dl, _ := s.snapshot(); return len(a) == 2 && len(dl) == 2 })
	drain(t, d)
	_, dead, _ := s.snapshot()
	for _, r := range dead {
		if r.Reason != ReasonMalformed || r.EventType != "Boom" {
			t.Errorf("dead letter %+v; want malformed Boom", r)
		}
	}
	if rec.len() != 2 {
		t.Errorf("handled %d; want the 2 Pings", rec.len())
	}
}

// A panic in a middleware, not the handler, is the handler's failure: it
// is counted, retried, and dead-lettered, and the others still run.
func TestMiddlewarePanicIsolated(t *testing.T) {
	boom := bus.Middleware(func(next bus.Handler) bus.Handler {
		return bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
			if env.AggregateID == "bad" {
				panic("middleware")
			}
			return next.Handle(ctx, env)
		})
	})
	d, s := newDispatcher(t, Config{Middleware: []bus.Middleware{boom}})
	a, b := &recorder{}, &recorder{}
	if _, err := d.SubscribeAll(a, bus.WithName("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Subscribe("Ping", b, bus.WithName("b")); err != nil {
		t.Fatal(err)
	}
	dispatch(t, d, message(t, envelope("bad", 1, Ping{})), message(t, envelope("good", 1, Ping{})))
	waitUntil(t, "settled", func() bool { ac, dl, _ := s.snapshot(); return len(ac) == 1 && len(dl) == 1 })
	drain(t, d)
	_, dead, _ := s.snapshot()
	if dead[0].Reason != ReasonMaxRetries || len(dead[0].Handlers) != 2 {
		t.Errorf("dead letter %+v", dead[0])
	}
	if st := d.Stats(); st.HandlerPanics != 6 || st.HandlerErrors != 6 || st.InFlight != 0 {
		t.Errorf("stats %+v", st)
	}
}

// Stats never shows an effect without its cause: no more handler errors
// than calls, no more panics than errors, no more messages settled than
// received, while all of them move.
func TestStatsNoEffectWithoutCause(t *testing.T) {
	d, s := newDispatcher(t, Config{Workers: 2, Retry: RetryPolicy{MaxRetries: 1, Multiplier: 1}})
	if _, err := d.SubscribeAll(bus.HandlerFunc(func(_ context.Context, env eventsource.Envelope) error {
		if env.Version%2 == 0 {
			panic("even")
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			st := d.Stats()
			switch {
			case st.HandlerErrors > st.HandlersInvoked:
				bad = errors.New("more handler errors than calls")
			case st.HandlerPanics > st.HandlerErrors:
				bad = errors.New("more panics than errors")
			case st.Delivered > st.HandlersInvoked:
				bad = errors.New("more deliveries than calls")
			case st.Handled+st.DeadLettered > st.Received:
				bad = errors.New("more settled than received")
			case st.InFlight < 0:
				bad = errors.New("negative in flight")
			}
			if bad != nil {
				return
			}
		}
	})
	const n = 20000
	msgs := make([]Message, 0, 64)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; i < n && time.Now().Before(deadline); {
		msgs = msgs[:0]
		for range 64 {
			i++
			msgs = append(msgs, message(t, envelope("agg"+string(rune('a'+i%8)), int64(i), Ping{})))
		}
		if _, err := d.DispatchBatch(context.Background(), msgs); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "all settled", func() bool { a, dl, _ := s.snapshot(); return len(a)+len(dl) == int(d.Stats().Received) })
	close(stop)
	wg.Wait()
	if bad != nil {
		t.Fatal(bad)
	}
}

// MaxInFlight bounds the messages not yet settled with the broker. While
// acknowledging fails, handled messages wait in the acker unacknowledged:
// they must count against the bound, or Dispatch goes on reading and
// memory grows with the outage (up to MaxInFlight batches of up to
// MaxInFlight messages each).
func TestMaxInFlightBoundsUnacknowledged(t *testing.T) {
	const bound = 4
	d, s := newDispatcher(t, Config{MaxInFlight: bound, Workers: 1})
	s.failAcks.Store(1 << 30) // the broker refuses every Ack for now
	if _, err := d.SubscribeAll(&recorder{}); err != nil {
		t.Fatal(err)
	}
	dispatched := 0
	for i := range 100 {
		batch := []Message{message(t, envelope("a", int64(2*i+1), Ping{})), message(t, envelope("b", int64(2*i+1), Ping{}))}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		n, err := d.DispatchBatch(ctx, batch)
		cancel()
		dispatched += n
		if err != nil {
			break
		}
	}
	if dispatched > bound {
		t.Errorf("dispatched %d messages while none could be acknowledged; MaxInFlight is %d", dispatched, bound)
	}
	if st := d.Stats(); st.InFlight != int64(dispatched) {
		t.Errorf("in flight %d with %d dispatched and none acknowledged", st.InFlight, dispatched)
	}
	s.failAcks.Store(0)
	waitUntil(t, "all acknowledged", func() bool { a, _, _ := s.snapshot(); return len(a) == dispatched })
	drain(t, d)
	if st := d.Stats(); st.InFlight != 0 || st.Handled != uint64(dispatched) {
		t.Errorf("after the outage: in flight %d, handled %d; want 0, %d", st.InFlight, st.Handled, dispatched)
	}
}

// TestReplayNamingAHandlerTwiceRunsItOnce: a record whose handler list
// repeats a name (written by hand, or damaged) runs that handler once.
func TestReplayNamingAHandlerTwiceRunsItOnce(t *testing.T) {
	d, s := newDispatcher(t, Config{})
	fixed := &recorder{}
	if _, err := d.Subscribe("Ping", fixed, bus.WithName("fixed")); err != nil {
		t.Fatal(err)
	}
	m := message(t, envelope("a", 1, Ping{}))
	m.Handlers = []string{"fixed", "fixed"}
	dispatch(t, d, m)
	waitUntil(t, "settled", func() bool { a, _, _ := s.snapshot(); return len(a) == 1 })
	drain(t, d)
	if fixed.len() != 1 {
		t.Fatalf("the handler named twice ran %d times, want 1", fixed.len())
	}
}
