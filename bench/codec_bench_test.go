package bench

import (
	"testing"

	"github.com/eventsource-go/eventsource"
)

// BenchmarkCodecUnmarshal decodes a traced envelope, as a broker consumer
// does for every event; EnvelopeType is what a consumer pays for an event
// it does not handle.
func BenchmarkCodecUnmarshal(b *testing.B) {
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[OrderPlaced](reg)
	codec := eventsource.NewJSONCodec(reg)
	env := orderEnvelope("order-1")
	env.Metadata = eventsource.Metadata{CorrelationID: "c-1",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	body, err := codec.Marshal(env)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := codec.Unmarshal(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("EnvelopeType", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := eventsource.EnvelopeType(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
