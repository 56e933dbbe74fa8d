package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource"
)

// refusingSettler refuses, as a broker refuses a record over its size
// limit, every dead letter carrying more than maxBody bytes, and every
// reschedule.
type refusingSettler struct {
	*fakeSettler
	maxBody int
}

func (r *refusingSettler) DeadLetter(ctx context.Context, msg Message, rec DeadLetter) error {
	if len(rec.Body) > r.maxBody {
		return fmt.Errorf("write: %w: message too large", ErrRefused)
	}
	return r.fakeSettler.DeadLetter(ctx, msg, rec)
}

func (r *refusingSettler) Reschedule(context.Context, Message, Retry) error {
	return fmt.Errorf("write retry: %w: message too large", ErrRefused)
}

// A permanent refusal is never retried: a dead letter too large for its
// destination is stored without the original bytes, with their size and
// origin; a retry the broker refuses is dead-lettered instead. Neither
// holds the worker, so the events behind them are handled.
func TestRefusalsDoNotWedgeTheWorker(t *testing.T) {
	settler := &refusingSettler{fakeSettler: newSettler(), maxBody: 512}
	d, err := New(Config{
		Group: "g", Registry: registry(), Settler: settler, BrokerRetries: true, Workers: 1,
		Retry:  RetryPolicy{MaxRetries: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	ok := &recorder{fail: func(env eventsource.Envelope) error {
		if env.AggregateID == "failing" {
			return errors.New("handler down")
		}
		return nil
	}}
	if _, err := d.Subscribe("Ping", ok); err != nil {
		t.Fatal(err)
	}
	big := Message{ID: "big", Source: "events", Key: "big", Type: "Ping", Body: make([]byte, 4096), Attempt: 1}
	dispatch(t, d, big, message(t, envelope("failing", 1, Ping{})), message(t, envelope("after", 1, Ping{})))
	waitUntil(t, "settled", func() bool { a, dl, _ := settler.snapshot(); return len(a) == 1 && len(dl) == 2 })
	drain(t, d)
	_, dead, _ := settler.snapshot()
	byID := map[string]DeadLetter{}
	for _, r := range dead {
		byID[r.SourceID] = r
	}
	if r := byID["big"]; r.Reason != ReasonMalformed || !r.BodyDropped || r.Size != 4096 || len(r.Body) != 0 || r.Source != "events" {
		t.Errorf("oversized dead letter: reason %q, dropped %v, size %d, body %d bytes, source %q; want malformed, dropped, 4096, 0, events",
			r.Reason, r.BodyDropped, r.Size, len(r.Body), r.Source)
	}
	var refusedRetry DeadLetter
	for id, r := range byID {
		if id != "big" {
			refusedRetry = r
		}
	}
	if refusedRetry.Reason != ReasonRetryRefused || refusedRetry.BodyDropped || len(refusedRetry.Handlers) != 1 {
		t.Errorf("refused retry: %+v; want retry_refused with its body and the failed handler", refusedRetry)
	}
	if ok.len() != 1 {
		t.Errorf("handled %d events behind the refusals; want 1", ok.len())
	}
}
