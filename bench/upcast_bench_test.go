package bench

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/eventsource-go/eventsource"
)

// Schema evolution's cost. BenchmarkUpcastDecode decodes one envelope in
// the wire format with JSONCodec.Unmarshal (the brokers' consumer path)
// and one payload with Registry.DecodeVersion (the stores' path), side by
// side:
//
//   - no-upcasters: a registry with no versions, renames or upcasters;
//     the path as it was before schema evolution existed.
//   - evolving-registry: the same bytes, with a registry in which another
//     type has upcasters and a former name: what an unrelated type pays.
//   - current-version: a type at schema version 5 read at 5 (no step).
//   - steps=N: the same type read at 5-N, through N upcasters, each a
//     realistic step (decode the payload into a map, rename a key,
//     encode). The cost per step is (steps=N - current-version) / N.
func BenchmarkUpcastDecode(b *testing.B) {
	plainReg := eventsource.NewRegistry()
	eventsource.MustRegister[benchPrice](plainReg)
	evolving := evolvingRegistry()
	plainBytes := upcastEnvelope("BenchPrice", 0, `{"cents":1250,"currency":"USD","sku":"A-1"}`)

	b.Run("codec/no-upcasters", func(b *testing.B) { benchUnmarshal(b, plainReg, plainBytes) })
	b.Run("codec/evolving-registry", func(b *testing.B) { benchUnmarshal(b, evolving, plainBytes) })
	b.Run("codec/current-version", func(b *testing.B) {
		benchUnmarshal(b, evolving, upcastEnvelope("BenchPriceV", 5, `{"k4":1250,"currency":"USD","sku":"A-1"}`))
	})
	for _, steps := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("codec/steps=%d", steps), func(b *testing.B) {
			benchUnmarshal(b, evolving, upcastEnvelope("BenchPriceV", 5-steps,
				fmt.Sprintf(`{"k%d":1250,"currency":"USD","sku":"A-1"}`, 4-steps)))
		})
	}

	payload := []byte(`{"cents":1250,"currency":"USD","sku":"A-1"}`)
	b.Run("store-decode/no-upcasters", func(b *testing.B) { benchDecodeVersion(b, plainReg, "BenchPrice", 1, payload) })
	b.Run("store-decode/evolving-registry", func(b *testing.B) { benchDecodeVersion(b, evolving, "BenchPrice", 1, payload) })
	b.Run("store-decode/steps=2", func(b *testing.B) {
		benchDecodeVersion(b, evolving, "BenchPriceV", 3, []byte(`{"k2":1250,"currency":"USD","sku":"A-1"}`))
	})
}

func benchUnmarshal(b *testing.B, reg *eventsource.Registry, body []byte) {
	codec := eventsource.NewJSONCodec(reg)
	if _, err := codec.Unmarshal(body); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := codec.Unmarshal(body); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecodeVersion(b *testing.B, reg *eventsource.Registry, typ string, version int, data []byte) {
	if _, _, err := reg.DecodeVersion(typ, version, data); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := reg.DecodeVersion(typ, version, data); err != nil {
			b.Fatal(err)
		}
	}
}

type benchPrice struct {
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
	SKU      string `json:"sku"`
}

func (benchPrice) EventType() string { return "BenchPrice" }

// benchPriceV is at version 5; version v (1 to 4) keeps the amount under
// "k<v-1>", and each step renames it to the next key.
type benchPriceV struct {
	Cents    int64  `json:"k4"`
	Currency string `json:"currency"`
	SKU      string `json:"sku"`
}

func (benchPriceV) EventType() string  { return "BenchPriceV" }
func (benchPriceV) SchemaVersion() int { return 5 }

func evolvingRegistry() *eventsource.Registry {
	r := eventsource.NewRegistry()
	eventsource.MustRegister[benchPrice](r)
	eventsource.MustRegister[benchPriceV](r)
	if err := r.RegisterRename("BenchPriceOld", "BenchPriceV"); err != nil {
		panic(err)
	}
	for v := 1; v < 5; v++ {
		from, to := fmt.Sprintf("k%d", v-1), fmt.Sprintf("k%d", v)
		r.MustRegisterUpcaster("BenchPriceV", v, func(data []byte) ([]byte, error) {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(data, &m); err != nil {
				return nil, err
			}
			m[to] = m[from]
			delete(m, from)
			return json.Marshal(m)
		})
	}
	return r
}

func upcastEnvelope(typ string, schemaVersion int, data string) []byte {
	sv := ""
	if schemaVersion > 0 {
		sv = fmt.Sprintf(`,"schema_version":%d`, schemaVersion)
	}
	return fmt.Appendf(nil, `{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":%q%s,"aggregate_type":"Order","aggregate_id":"42",`+
		`"version":7,"occurred_at":"2026-01-02T03:04:05.123456Z","metadata":{"correlation_id":"req-7"},"data":%s}`, typ, sv, data)
}
