package repository_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/repository"
)

// priced is at schema version 2; version 1 was "relay_test.PriceSet",
// {"price": dollars}.
type priced struct {
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
}

func (priced) EventType() string  { return "relay_test.Priced" }
func (priced) SchemaVersion() int { return 2 }

func pricedRegistry(t *testing.T) *eventsource.Registry {
	t.Helper()
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[priced](reg)
	if err := reg.RegisterRename("relay_test.PriceSet", "relay_test.Priced"); err != nil {
		t.Fatal(err)
	}
	if err := reg.RegisterUpcaster("relay_test.Priced", 1, eventsource.TypedUpcaster(func(v struct{ Price float64 }) (priced, error) {
		return priced{Cents: int64(v.Price*100 + 0.5), Currency: "USD"}, nil
	})); err != nil {
		t.Fatal(err)
	}
	return reg
}

// The relay hands a broker bus the stored payloads undecoded; the
// bus's consumers decode them, so handlers get typed events, an event
// stored by an older release upcast like any other.
func TestRelayToABrokerDeliversDecodedEvents(t *testing.T) {
	url := testenv.URL(t, "EVENTSOURCE_REDIS_URL", "set EVENTSOURCE_REDIS_URL=redis://127.0.0.1:6379/0 to run it")
	ctx, cancel := context.WithTimeout(t.Context(), relayTimeout)
	defer cancel()
	reg := pricedRegistry(t)
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "events.db"), sqlite.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })

	prefix := "relay-test-" + uuid.NewString()
	cleanupRedis(t, url, prefix)
	b, err := redis.New(ctx, redis.Config{URL: url, Registry: reg, StreamPrefix: prefix, Block: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	var (
		mu  sync.Mutex
		got []priced
	)
	if _, err := bus.On(b, func(_ context.Context, e priced, env eventsource.Envelope) error {
		mu.Lock()
		defer mu.Unlock()
		if env.Type != e.EventType() {
			t.Errorf("handler got type %q for a %T", env.Type, e)
		}
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// An event an older release stored, at version 1 under the former
	// name (appended as the bytes it wrote), then a current one.
	old := eventsource.NewEnvelope(eventsource.RawEvent{Name: "relay_test.PriceSet", Schema: 1, JSON: json.RawMessage(`{"price":12.5}`)})
	cur := eventsource.NewEnvelope(priced{Cents: 99, Currency: "EUR"})
	for _, env := range []*eventsource.Envelope{&old, &cur} {
		env.AggregateType, env.AggregateID = "Item", "1"
	}
	if _, err := store.Append(ctx, eventsource.StreamID("Item", "1"), eventstore.NoStream, []eventsource.Envelope{old, cur}); err != nil {
		t.Fatal(err)
	}

	rec := &rawRecorder{Bus: b}
	r := repository.NewRelay("relay-test", store, store, rec)
	if n, err := r.PublishPending(ctx); err != nil || n != 2 {
		t.Fatalf("PublishPending = %d, %v; want 2 events", n, err)
	}
	if rec.decoded.Load() != 0 {
		t.Errorf("the relay decoded %d events for a bus that encodes them", rec.decoded.Load())
	}
	want := []priced{{1250, "USD"}, {99, "EUR"}}
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(want) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("handled %d of %d events", n, len(want))
		case <-time.After(5 * time.Millisecond): // polling interval, bounded by ctx
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("handler got %+v, want %+v", got, want)
	}
}

// rawRecorder counts the events published to it that are not
// eventsource.RawEvents.
type rawRecorder struct {
	bus.Bus
	decoded atomic.Int32
}

func (r *rawRecorder) Publish(ctx context.Context, events ...eventsource.Envelope) error {
	for _, env := range events {
		if _, ok := env.Event.(eventsource.RawEvent); !ok {
			r.decoded.Add(1)
		}
	}
	return r.Bus.Publish(ctx, events...)
}

func (r *rawRecorder) Unwrap() bus.Bus { return r.Bus }

// cleanupRedis deletes the bus's keys when the test ends (after the bus
// is closed: cleanups run last-registered first).
func cleanupRedis(t *testing.T, url, prefix string) {
	t.Helper()
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c := goredis.NewClient(opts)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := redis.DeleteKeys(ctx, c, prefix); err != nil {
			t.Errorf("deleting keys of %s: %v", prefix, err)
		}
	})
}

// A bus the relay cannot tell encodes what it publishes (here a decorator
// without Unwrap) is given decoded events: RawEvents would reach handlers
// that expect the event types.
func TestRelayGivesOtherBusesDecodedEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), relayTimeout)
	defer cancel()
	reg := pricedRegistry(t)
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "events.db"), sqlite.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	env := eventsource.NewEnvelope(priced{Cents: 99, Currency: "EUR"})
	env.AggregateType, env.AggregateID = "Item", "1"
	if _, err := store.Append(ctx, eventsource.StreamID("Item", "1"), eventstore.NoStream, []eventsource.Envelope{env}); err != nil {
		t.Fatal(err)
	}
	inner := bus.NewInProcess()
	t.Cleanup(func() { _ = inner.Close(context.Background()) })
	var typed atomic.Int32
	if _, err := bus.On(inner, func(context.Context, priced, eventsource.Envelope) error { typed.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	rec := &opaqueRecorder{rawRecorder{Bus: inner}}
	if n, err := repository.NewRelay("relay-test", store, store, rec).PublishPending(ctx); err != nil || n != 1 {
		t.Fatalf("PublishPending = %d, %v; want 1 event", n, err)
	}
	if rec.decoded.Load() != 1 || typed.Load() != 1 {
		t.Errorf("%d of 1 events published decoded, %d handled as the type; want 1, 1", rec.decoded.Load(), typed.Load())
	}
}

// opaqueRecorder is a rawRecorder the relay cannot see through.
type opaqueRecorder struct{ rawRecorder }

func (*opaqueRecorder) Unwrap() {} // not bus.Unwrap's method: hides the inner bus
