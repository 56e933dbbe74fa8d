package eventsource

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Event is a domain event: a plain struct that names its type. The name is
// what travels on the wire and what handlers subscribe to, so it must stay
// stable once events of that type are stored.
type Event interface {
	EventType() string
}

// Metadata carries the facts about an event that are not part of the domain:
// who caused it and which trace it belongs to.
type Metadata struct {
	CorrelationID string `json:"correlation_id,omitempty"`
	CausationID   string `json:"causation_id,omitempty"`
	TenantID      string `json:"tenant_id,omitempty"`
	// TraceParent and TraceState are the W3C trace context headers.
	TraceParent string            `json:"traceparent,omitempty"`
	TraceState  string            `json:"tracestate,omitempty"`
	Extra       map[string]string `json:"extra,omitempty"`
}

// IsZero reports whether no field of m is set.
func (m Metadata) IsZero() bool {
	return m.CorrelationID == "" && m.CausationID == "" && m.TenantID == "" &&
		m.TraceParent == "" && m.TraceState == "" && len(m.Extra) == 0
}

// Envelope is one event with its facts. Aggregates create envelopes when they
// raise events; the store sets Position; buses carry envelopes unchanged.
type Envelope struct {
	ID            uuid.UUID // UUID v7: unique and time-ordered
	Type          string    // Event.EventType()
	AggregateType string
	AggregateID   string
	Version       int64 // 1-based position of the event in its aggregate's stream
	Position      int64 // global position assigned by the store; 0 until stored
	OccurredAt    time.Time
	Metadata      Metadata
	Event         Event // the decoded payload
}

// NewEnvelope wraps e in an envelope with a fresh UUID v7 and the current
// time. Aggregate fields are left for the caller (usually aggregate.Raise).
func NewEnvelope(e Event) Envelope {
	return Envelope{
		ID:         uuid.Must(uuid.NewV7()),
		Type:       e.EventType(),
		OccurredAt: time.Now().UTC(),
		Event:      e,
	}
}

type metadataKey struct{}

// metadataCtx carries Metadata in one allocation: context.WithValue would
// box the struct apart from its node, and every handler run on a broker
// bus makes one of these.
type metadataCtx struct {
	context.Context
	md Metadata
}

func (c *metadataCtx) Value(key any) any {
	if key == (metadataKey{}) {
		return &c.md // a pointer boxes without allocating
	}
	return c.Context.Value(key)
}

// WithMetadata returns a context that carries md; the repository stamps it
// on the events it saves, so a command handler can pass correlation and
// trace IDs through without touching the aggregate.
func WithMetadata(ctx context.Context, md Metadata) context.Context {
	return &metadataCtx{ctx, md}
}

// MetadataFrom returns the metadata carried by ctx, if any.
func MetadataFrom(ctx context.Context) (Metadata, bool) {
	if md, ok := ctx.Value(metadataKey{}).(*Metadata); ok {
		return *md, true
	}
	return Metadata{}, false
}
