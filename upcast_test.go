package eventsource_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/eventsource-go/eventsource"
)

// Price is at schema version 3 and was called "PriceSet" at version 1.
type Price struct {
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
}

func (Price) EventType() string  { return "PriceChanged" }
func (Price) SchemaVersion() int { return 3 }

type priceV2 struct {
	PriceCents int64 `json:"price_cents"`
}

func priceRegistry(t testing.TB) *eventsource.Registry {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[Price](r)
	must(t, r.RegisterRename("PriceSet", "PriceChanged"))
	must(t, r.RegisterUpcaster("PriceChanged", 1, func(data []byte) ([]byte, error) {
		var v1 struct{ Price float64 }
		if err := json.Unmarshal(data, &v1); err != nil {
			return nil, err
		}
		return json.Marshal(priceV2{PriceCents: int64(v1.Price*100 + 0.5)})
	}))
	must(t, r.RegisterUpcaster("PriceChanged", 2, eventsource.TypedUpcaster(func(v priceV2) (Price, error) {
		return Price{Cents: v.PriceCents, Currency: "USD"}, nil
	})))
	return r
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

const wireID = "01890a5d-ac96-774b-bcce-b302099a8057"

func wire(typ, schemaVersion, data string) []byte {
	sv := ""
	if schemaVersion != "" {
		sv = `,"schema_version":` + schemaVersion
	}
	return []byte(`{"id":"` + wireID + `","type":"` + typ + `"` + sv + `,"aggregate_type":"Item","aggregate_id":"1","version":1,"data":` + data + `}`)
}

func TestUpcastThroughTheCodec(t *testing.T) {
	codec := eventsource.NewJSONCodec(priceRegistry(t))
	for _, tc := range []struct {
		name string
		b    []byte
		want Price
	}{
		{"no version, former name", wire("PriceSet", "", `{"price":12.5}`), Price{1250, "USD"}},
		{"version 1, null", wire("PriceChanged", "null", `{"price":0.1}`), Price{10, "USD"}},
		{"version 2", wire("PriceChanged", "2", `{"price_cents":7}`), Price{7, "USD"}},
		{"current version, former name", wire("PriceSet", "3", `{"cents":5,"currency":"EUR"}`), Price{5, "EUR"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := codec.Unmarshal(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if env.Type != "PriceChanged" || env.Event != tc.want || env.ID != uuid.MustParse(wireID) {
				t.Fatalf("got %q %#v, want PriceChanged %#v", env.Type, env.Event, tc.want)
			}
		})
	}
}

func TestUnreadableVersionsAreTypedErrors(t *testing.T) {
	noFirstStep := eventsource.NewRegistry()
	eventsource.MustRegister[Price](noFirstStep)
	must(t, noFirstStep.RegisterUpcaster("PriceChanged", 2, func(b []byte) ([]byte, error) { return b, nil }))
	for _, tc := range []struct {
		name string
		reg  *eventsource.Registry
		b    []byte
		want error
	}{
		{"newer than the code", priceRegistry(t), wire("PriceChanged", "4", `{}`), eventsource.ErrUnknownSchemaVersion},
		{"far newer", priceRegistry(t), wire("PriceChanged", "99999999999", `{}`), eventsource.ErrUnknownSchemaVersion},
		{"no chain from 1", noFirstStep, wire("PriceChanged", "", `{"price":1}`), eventsource.ErrUnknownSchemaVersion},
		{"negative", priceRegistry(t), wire("PriceChanged", "-1", `{}`), eventsource.ErrMalformed},
		{"not an integer", priceRegistry(t), wire("PriceChanged", "1.5", `{}`), eventsource.ErrMalformed},
		{"upcaster fails", priceRegistry(t), wire("PriceSet", "", `{"price":"x"}`), eventsource.ErrMalformed},
		{"unknown former name", priceRegistry(t), wire("PriceWas", "", `{}`), eventsource.ErrUnknownEventType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := eventsource.NewJSONCodec(tc.reg).Unmarshal(tc.b)
			var de *eventsource.DecodeError
			if !errors.Is(err, tc.want) || !errors.As(err, &de) {
				t.Fatalf("Unmarshal = %v; want a *DecodeError matching %v", err, tc.want)
			}
			if env.Event != nil {
				t.Fatalf("an error came with a payload %#v", env.Event)
			}
		})
	}
}

func TestMarshalWritesSchemaVersion(t *testing.T) {
	codec := eventsource.NewJSONCodec(priceRegistry(t))
	b, err := codec.Marshal(eventsource.NewEnvelope(Price{Cents: 1, Currency: "EUR"}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"type":"PriceChanged","schema_version":3,`) {
		t.Fatalf("Marshal = %s; want schema_version 3 after the type", b)
	}
	env, err := codec.Unmarshal(b)
	if err != nil || env.Event != (Price{1, "EUR"}) {
		t.Fatalf("round trip = %#v, %v", env.Event, err)
	}
	// A type that never changed keeps the bytes it always had.
	b, err = codec.Marshal(eventsource.NewEnvelope(plain{}))
	if err != nil || strings.Contains(string(b), "schema_version") {
		t.Fatalf("Marshal of an unversioned event = %s, %v; want no schema_version", b, err)
	}
}

type plain struct{}

func (plain) EventType() string { return "Plain" }

type badVersion struct{}

func (badVersion) EventType() string  { return "Bad" }
func (badVersion) SchemaVersion() int { return 2 }

func TestRegistrationChecksTheChain(t *testing.T) {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[Price](r)
	id := func(b []byte) ([]byte, error) { return b, nil }
	for name, err := range map[string]error{
		"step at the current version": r.RegisterUpcaster("PriceChanged", 3, id),
		"step from version 0":         r.RegisterUpcaster("PriceChanged", 0, id),
		"nil step":                    r.RegisterUpcaster("PriceChanged", 1, nil),
		"rename a registered type":    r.RegisterRename("PriceChanged", "Other"),
		"rename to itself":            r.RegisterRename("X", "X"),
	} {
		if !errors.Is(err, eventsource.ErrInvalidEvent) {
			t.Errorf("%s: %v, want ErrInvalidEvent", name, err)
		}
	}
	must(t, r.RegisterUpcaster("PriceChanged", 1, id))
	if err := r.RegisterUpcaster("PriceChanged", 1, id); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("duplicate step: %v", err)
	}
	must(t, r.RegisterRename("A", "B"))
	must(t, r.RegisterRename("A", "B")) // the same again is a no-op
	if err := r.RegisterRename("B", "A"); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("a rename cycle: %v", err)
	}
	if err := r.RegisterUpcaster("A", 1, id); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("upcaster under a former name: %v", err)
	}
	// Upcasters registered first lead past a type that forgot SchemaVersion.
	r2 := eventsource.NewRegistry()
	must(t, r2.RegisterUpcaster("Plain", 1, id))
	if err := eventsource.Register[plain](r2); !errors.Is(err, eventsource.ErrInvalidEvent) {
		t.Errorf("Register of a version-1 type with an upcaster from 1: %v", err)
	}
	must(t, r2.RegisterUpcaster("Bad", 1, id))
	must(t, eventsource.Register[badVersion](r2))
	if got := r2.SchemaVersion("Bad"); got != 2 {
		t.Errorf("SchemaVersion(Bad) = %d, want 2", got)
	}
}

func TestRenamesChainAndCanonical(t *testing.T) {
	r := priceRegistry(t)
	must(t, r.RegisterRename("PriceFixed", "PriceSet")) // an even older name
	for _, name := range []string{"PriceFixed", "PriceSet", "PriceChanged"} {
		if got := r.Canonical(name); got != "PriceChanged" {
			t.Errorf("Canonical(%q) = %q", name, got)
		}
	}
	if r.Has("PriceSet") || !reflect.DeepEqual(r.Types(), []string{"PriceChanged"}) {
		t.Errorf("a former name is listed as a type: Has %v, Types %v", r.Has("PriceSet"), r.Types())
	}
	e, name, err := r.DecodeVersion("PriceFixed", 0, []byte(`{"price":1}`))
	if err != nil || name != "PriceChanged" || e != (Price{100, "USD"}) {
		t.Fatalf("DecodeVersion via two renames = %#v, %q, %v", e, name, err)
	}
}

func TestUpcasterPanicIsAnError(t *testing.T) {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[badVersion](r)
	must(t, r.RegisterUpcaster("Bad", 1, func([]byte) ([]byte, error) { panic("boom") }))
	if _, _, err := r.DecodeVersion("Bad", 1, []byte(`{}`)); !errors.Is(err, eventsource.ErrMalformed) {
		t.Fatalf("a panicking upcaster: %v", err)
	}
}

// Decoding bytes of a type with no upcasters allocates what it did before
// versions existed: the payload, plus the envelope's three strings (type,
// aggregate type and ID); so does an event at its current version.
func TestNoUpcasterDecodeAllocs(t *testing.T) {
	r := priceRegistry(t)
	eventsource.MustRegister[plain](r)
	codec := eventsource.NewJSONCodec(r)
	payload := testing.AllocsPerRun(100, func() { _, _ = r.Decode("Plain", []byte(`{}`)) })
	plainBytes, priceBytes := wire("Plain", "", `{}`), wire("PriceChanged", "3", `{"cents":1}`)
	unversioned := testing.AllocsPerRun(100, func() {
		if _, err := codec.Unmarshal(plainBytes); err != nil {
			t.Fatal(err)
		}
	})
	if unversioned > payload+3 {
		t.Errorf("Unmarshal allocates %v times; the payload decode alone %v, plus 3 strings", unversioned, payload)
	}
	pricePayload := testing.AllocsPerRun(100, func() { _, _, _ = r.DecodeVersion("PriceChanged", 3, []byte(`{"cents":1}`)) })
	current := testing.AllocsPerRun(100, func() {
		if _, err := codec.Unmarshal(priceBytes); err != nil {
			t.Fatal(err)
		}
	})
	if current > pricePayload+3 {
		t.Errorf("Unmarshal at the current version allocates %v times; the payload decode alone %v, plus 3 strings", current, pricePayload)
	}
}
