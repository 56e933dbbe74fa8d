package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/eventsource-go/eventsource"
)

// Command is a request a saga sends to an aggregate. It is stored in the
// instance's outbox as JSON until dispatched, so its fields must be
// exported; CommandType names it to the Dispatcher.
type Command interface {
	CommandType() string
}

// PendingCommand is a command in an instance's outbox: what a Dispatcher
// receives.
type PendingCommand struct {
	// ID is deterministic: the saga, the instance, the triggering delivery
	// and the command's index in it. A dispatch repeated after a crash
	// carries the same ID.
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Data          json.RawMessage `json:"data"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	CausationID   string          `json:"causation_id,omitempty"`
	TenantID      string          `json:"tenant_id,omitempty"`
	TraceParent   string          `json:"traceparent,omitempty"`
	TraceState    string          `json:"tracestate,omitempty"`

	// Delivery is the ID of the delivery that sent the command (an event
	// ID or a deadline ID); ClaimedUntil is when the runner dispatching it
	// gives up its claim, zero when nobody dispatches it. Bookkeeping of
	// the outbox, for the runner.
	Delivery     string    `json:"delivery"`
	ClaimedUntil time.Time `json:"claimed_until,omitzero"`
}

// Metadata is what a command's effects carry forward.
func (p PendingCommand) Metadata() eventsource.Metadata {
	return eventsource.Metadata{CorrelationID: p.CorrelationID, CausationID: p.CausationID,
		TenantID: p.TenantID, TraceParent: p.TraceParent, TraceState: p.TraceState}
}

// Dispatcher carries out commands after the delivery that sent them has
// committed. An error leaves the command in the outbox: it is dispatched
// again on the event's redelivery.
type Dispatcher interface {
	Dispatch(ctx context.Context, cmd PendingCommand) error
}

// ErrUnknownCommand is returned by Commands for a type nobody handles.
var ErrUnknownCommand = errors.New("saga: no handler for command")

// Commands is a Dispatcher that routes commands by type to typed handlers
// registered with Handle. A handler's ctx carries the command's metadata
// (eventsource.MetadataFrom; a repository's Save stamps it on the events
// it stores) and its ID (CommandID).
type Commands struct {
	mu       sync.RWMutex
	handlers map[string]func(ctx context.Context, data json.RawMessage) error
}

// NewCommands returns a Commands with no handlers.
func NewCommands() *Commands {
	return &Commands{handlers: map[string]func(context.Context, json.RawMessage) error{}}
}

// Handle registers fn for commands of type C.
func Handle[C Command](cs *Commands, fn func(ctx context.Context, cmd C) error) {
	var zero C
	name := zero.CommandType()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.handlers[name] = func(ctx context.Context, data json.RawMessage) error {
		var c C
		if err := json.Unmarshal(data, &c); err != nil {
			return fmt.Errorf("saga: decode command %s: %w", name, err)
		}
		return fn(ctx, c)
	}
}

// Dispatch runs the handler of cmd's type with ctx carrying its metadata
// and ID.
func (cs *Commands) Dispatch(ctx context.Context, cmd PendingCommand) error {
	cs.mu.RLock()
	h, ok := cs.handlers[cmd.Type]
	cs.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownCommand, cmd.Type)
	}
	return h(commandContext(ctx, cmd), cmd.Data)
}

type commandIDKey struct{}

// commandContext is ctx with cmd's metadata (for the repository) and ID.
func commandContext(ctx context.Context, cmd PendingCommand) context.Context {
	ctx = eventsource.WithMetadata(ctx, cmd.Metadata())
	return context.WithValue(ctx, commandIDKey{}, cmd.ID)
}

// CommandID returns the ID of the command whose handler runs with ctx.
func CommandID(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(commandIDKey{}).(string)
	return id, ok
}

// DispatcherFunc adapts a function to a Dispatcher.
type DispatcherFunc func(ctx context.Context, cmd PendingCommand) error

// Dispatch calls f.
func (f DispatcherFunc) Dispatch(ctx context.Context, cmd PendingCommand) error { return f(ctx, cmd) }
