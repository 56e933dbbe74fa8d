package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/bustest"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// Records an older producer wrote (a former type name, older schema
// versions) reach the handler as the current struct; one from a newer
// release is dead-lettered as unknown_version.
func TestUpcastsOldRecords(t *testing.T) {
	cfg := Config{Topic: uniqueTopic("kt-upcast"), Group: "g", Partitions: 1, Registry: upcastRegistry(t)}
	b := open(t, cfg)
	defer closeBus(t, b)
	rec := bustest.NewRecorder()
	if _, err := b.Subscribe("PriceChanged", rec); err != nil {
		t.Fatal(err)
	}
	// A new group reads from the first offset: writing before Start is
	// what a backlog left by the older release looks like.
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections() // no kafka-go goroutine outlives the test
	w := &kafkago.Writer{Addr: kafkago.TCP(testConfig(t, Config{}).Brokers...), RequiredAcks: kafkago.RequireAll, Transport: tr}
	defer w.Close()
	var msgs []kafkago.Message
	for _, m := range oldMessages("item-1") {
		msgs = append(msgs, kafkago.Message{Topic: cfg.Topic, Key: []byte("item-1"), Value: m.body,
			Headers: []kafkago.Header{{Key: hdrEventType, Value: []byte(m.typ)}, {Key: hdrAggregateID, Value: []byte("item-1")}}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	checkUpcastDelivery(t, rec, b.DeadLetters())
}

// Schema evolution on the consumer: the shape PriceChanged has now (v3),
// what it was (v1, named PriceSet: dollars; v2: cents), and the messages
// an older producer left on the broker.

type upPrice struct {
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
}

func (upPrice) EventType() string  { return "PriceChanged" }
func (upPrice) SchemaVersion() int { return 3 }

func upcastRegistry(t testing.TB) *eventsource.Registry {
	t.Helper()
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[upPrice](reg)
	if err := reg.RegisterRename("PriceSet", "PriceChanged"); err != nil {
		t.Fatal(err)
	}
	reg.MustRegisterUpcaster("PriceChanged", 1, func(data []byte) ([]byte, error) {
		var v1 struct {
			Price float64 `json:"price"`
		}
		if err := json.Unmarshal(data, &v1); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]int64{"price_cents": int64(v1.Price*100 + 0.5)})
	})
	type v2 struct {
		PriceCents int64 `json:"price_cents"`
	}
	reg.MustRegisterUpcaster("PriceChanged", 2, eventsource.TypedUpcaster(func(old v2) (upPrice, error) {
		return upPrice{Cents: old.PriceCents, Currency: "USD"}, nil
	}))
	return reg
}

// oldMessage is one raw message: the transport's type copy and the body.
type oldMessage struct {
	typ  string
	body []byte
}

func oldMessages(key string) []oldMessage {
	env := func(v int, typ, schema, data string) []byte {
		return fmt.Appendf(nil, `{"id":%q,"type":%q%s,"aggregate_type":"Item","aggregate_id":%q,"version":%d,"occurred_at":"2024-01-02T03:04:05Z","data":%s}`,
			uuid.Must(uuid.NewV7()).String(), typ, schema, key, v, data)
	}
	return []oldMessage{
		{"PriceSet", env(1, "PriceSet", "", `{"price":12.5}`)},                                 // renamed, version 1
		{"PriceChanged", env(2, "PriceChanged", `,"schema_version":2`, `{"price_cents":300}`)}, // version 2
		{"PriceChanged", env(3, "PriceChanged", `,"schema_version":4`, `{"amount":{}}`)},       // from a newer release
	}
}

// checkUpcastDelivery waits for the two readable messages as the current
// struct and the too-new one as a dead letter saying why.
func checkUpcastDelivery(t *testing.T, rec *bustest.Recorder, admin consumer.Admin) {
	t.Helper()
	rec.WaitFor(t, 2, 20*time.Second)
	got := rec.Got()
	want := []upPrice{{1250, "USD"}, {300, "USD"}}
	for i, env := range got {
		if env.Type != "PriceChanged" || env.Event != want[i] {
			t.Errorf("event %d = %q %#v, want PriceChanged %#v", i, env.Type, env.Event, want[i])
		}
	}
	var recs []consumer.DeadLetter
	waitUntil(t, "the too-new event dead-lettered", func() bool {
		var err error
		recs, err = admin.List(context.Background(), "", 10)
		return err == nil && len(recs) > 0
	})
	r := recs[0]
	if len(recs) != 1 || r.Reason != consumer.ReasonUnknownVersion || r.EventType != "PriceChanged" ||
		!strings.Contains(r.Error, "schema version 4 is newer") {
		t.Fatalf("dead letters %+v; want one for PriceChanged, reason %q, saying version 4 is newer", recs, consumer.ReasonUnknownVersion)
	}
}
