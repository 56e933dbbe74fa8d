package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// A record stored without its body has nothing to deliver: Replay refuses
// it with consumer.ErrBodyDropped and leaves it, and ReplayAll replays the
// others and leaves it. (The broker's max_message_size is the same for
// the group's queue and its dead-letter queue, so the shared suite cannot
// make one: it is written here as the settler writes it.)
func TestReplayLeavesDroppedBody(t *testing.T) {
	url := amqpURL(t)
	retry := fastRetry
	retry.MaxRetries = 1
	cfg := Config{URL: url, Registry: bustest.NewRegistry(), Exchange: exchange(), Group: "g", Retry: retry}
	cleanupTopology(t, url, cfg, "g")
	b := open(t, cfg)
	defer closeBus(t, b)
	var broken atomic.Bool
	broken.Store(true)
	rec := bustest.NewRecorder()
	if _, err := b.SubscribeAll(bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
		if broken.Load() {
			return errors.New("down")
		}
		return rec.Handle(ctx, env)
	})); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	admin := b.DeadLetters()

	const dropped, size = "dropped-1", 200 << 20
	publishRaw(t, url, "", b.names.DeadLetterQueue, amqp.Publishing{Headers: amqp.Table{
		hDeadLetterID: dropped, hReason: string(consumer.ReasonMalformed), hGroup: "g", hTime: time.Now().Format(time.RFC3339Nano),
		hSource: b.names.Queue, hSourceID: "m-1", hDroppedSize: int64(size),
	}})
	const events = 3
	for i := range events {
		if err := b.Publish(ctx, bustest.NewEnvelope(fmt.Sprint("agg-", i), 1, bustest.Ping{N: i})); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the events dead-lettered", func() bool { n, _ := admin.Count(ctx); return n == events+1 })

	if err := admin.Replay(ctx, dropped); !errors.Is(err, consumer.ErrBodyDropped) {
		t.Errorf("Replay of a record without its body = %v, want an error matching ErrBodyDropped", err)
	}
	waitUntil(t, "the record back in the queue", func() bool { n, _ := admin.Count(ctx); return n == events+1 })
	broken.Store(false)
	if n, err := admin.ReplayAll(ctx); err != nil || n != events {
		t.Fatalf("ReplayAll = %d, %v; want %d", n, err, events)
	}
	rec.WaitFor(t, events, 15*time.Second)
	waitUntil(t, "the record back in the queue", func() bool { n, _ := admin.Count(ctx); return n == 1 })
	left, err := admin.List(ctx, "", 10)
	if err != nil || len(left) != 1 {
		t.Fatalf("List after ReplayAll = %+v, %v; want the record without its body", left, err)
	}
	if r := left[0]; r.ID != dropped || !r.BodyDropped || r.Size != size || r.Source != b.names.Queue || r.SourceID != "m-1" {
		t.Errorf("record left: %+v; want %s, dropped, %d bytes, from %s m-1", r, dropped, size, b.names.Queue)
	}
}
