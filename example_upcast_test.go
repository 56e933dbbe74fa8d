package eventsource_test

import (
	"encoding/json"
	"fmt"

	"github.com/eventsource-go/eventsource"
)

// ItemPriced is the current shape of an event that once held a price in
// dollars ("PriceSet" version 1), then in cents (version 2).
type ItemPriced struct {
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
}

func (ItemPriced) EventType() string  { return "ItemPriced" }
func (ItemPriced) SchemaVersion() int { return 3 }

// Old events keep decoding after the struct changed: each step turns one
// version's JSON into the next, raw or typed, and the former name still
// reads.
func ExampleRegistry_RegisterUpcaster() {
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[ItemPriced](reg)
	reg.MustRegisterUpcaster("ItemPriced", 1, func(data []byte) ([]byte, error) {
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
	reg.MustRegisterUpcaster("ItemPriced", 2, eventsource.TypedUpcaster(func(old v2) (ItemPriced, error) {
		return ItemPriced{Cents: old.PriceCents, Currency: "USD"}, nil
	}))
	if err := reg.RegisterRename("PriceSet", "ItemPriced"); err != nil {
		panic(err)
	}

	codec := eventsource.NewJSONCodec(reg)
	old := `{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"PriceSet","aggregate_id":"42","version":1,"data":{"price":19.99}}`
	env, err := codec.Unmarshal([]byte(old))
	fmt.Printf("%s %+v %v\n", env.Type, env.Event, err)

	b, _ := codec.Marshal(env)
	fmt.Println(string(b[45:88]))

	tooNew := `{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"ItemPriced","schema_version":4,"data":{}}`
	_, err = codec.Unmarshal([]byte(tooNew))
	fmt.Println(err)
	// Output:
	// ItemPriced {Cents:1999 Currency:USD} <nil>
	// "type":"ItemPriced","schema_version":3,"agg
	// eventsource: unknown schema version "ItemPriced": schema version 4 is newer than this code's 3
}
