package eventstore

import (
	"context"
	"iter"

	"github.com/eventsource-go/eventsource"
)

// RawReader is implemented by stores that can read the global order
// without decoding payloads, for code that forwards events as they were
// stored (the outbox relay on a broker bus).
type RawReader interface {
	// ReadAllRaw is ReadAll with every envelope's Event an
	// eventsource.RawEvent: the type name and schema version the event
	// was stored under and its payload's bytes, neither decoded with the
	// registry nor upcast. Envelope.Type is the stored name too. Order,
	// bounds and errors are ReadAll's.
	ReadAllRaw(ctx context.Context, fromPosition int64) iter.Seq2[eventsource.Envelope, error]
}
