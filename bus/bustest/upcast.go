package bustest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// Schema evolution on a consumer, for the broker buses' tests that put an
// older producer's messages on the broker with its own client: the shape
// PriceChanged has now (v3), what it was (v1, named PriceSet: dollars; v2:
// cents), and those messages.

// Price is PriceChanged at its current schema version, 3.
type Price struct {
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
}

func (Price) EventType() string  { return "PriceChanged" }
func (Price) SchemaVersion() int { return 3 }

// UpcastRegistry knows Price, its former name PriceSet and the steps from
// versions 1 and 2.
func UpcastRegistry(t testing.TB) *eventsource.Registry {
	t.Helper()
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[Price](reg)
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
	reg.MustRegisterUpcaster("PriceChanged", 2, eventsource.TypedUpcaster(func(old v2) (Price, error) {
		return Price{Cents: old.PriceCents, Currency: "USD"}, nil
	}))
	return reg
}

// OldMessage is one raw message: the transport's type copy and the body.
type OldMessage struct {
	Type string
	Body []byte
}

// OldMessages are what an older producer left for aggregate key: a renamed
// version-1 event, a version-2 event, and one from a newer release.
func OldMessages(key string) []OldMessage {
	env := func(v int, typ, schema, data string) []byte {
		return fmt.Appendf(nil, `{"id":%q,"type":%q%s,"aggregate_type":"Item","aggregate_id":%q,"version":%d,"occurred_at":"2024-01-02T03:04:05Z","data":%s}`,
			uuid.Must(uuid.NewV7()).String(), typ, schema, key, v, data)
	}
	return []OldMessage{
		{"PriceSet", env(1, "PriceSet", "", `{"price":12.5}`)},                                 // renamed, version 1
		{"PriceChanged", env(2, "PriceChanged", `,"schema_version":2`, `{"price_cents":300}`)}, // version 2
		{"PriceChanged", env(3, "PriceChanged", `,"schema_version":4`, `{"amount":{}}`)},       // from a newer release
	}
}

// CheckUpcastDelivery waits for the two readable OldMessages as the
// current struct and the too-new one as a dead letter saying why.
func CheckUpcastDelivery(t *testing.T, rec *Recorder, admin consumer.Admin) {
	t.Helper()
	const timeout = 20 * time.Second
	rec.WaitFor(t, 2, timeout)
	got := rec.Got()
	want := []Price{{1250, "USD"}, {300, "USD"}}
	for i, env := range got {
		if env.Type != "PriceChanged" || env.Event != want[i] {
			t.Errorf("event %d = %q %#v, want PriceChanged %#v", i, env.Type, env.Event, want[i])
		}
	}
	var recs []consumer.DeadLetter
	deadline := time.Now().Add(timeout)
	for {
		var err error
		recs, err = admin.List(context.Background(), "", 10)
		if err == nil && len(recs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for the too-new event to be dead-lettered (last error %v)", timeout, err)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
	r := recs[0]
	if len(recs) != 1 || r.Reason != consumer.ReasonUnknownVersion || r.EventType != "PriceChanged" ||
		!strings.Contains(r.Error, "schema version 4 is newer") {
		t.Fatalf("dead letters %+v; want one for PriceChanged, reason %q, saying version 4 is newer", recs, consumer.ReasonUnknownVersion)
	}
}
