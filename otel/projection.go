package otel

import (
	"context"
	"database/sql"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/projection"
)

// Projection returns p instrumented for a projection.Runner named name:
// each event it applies is a consumer span ("process <event type>", with
// eventsource.follower.name) under the context the event was saved with,
// and its duration is recorded like a handler's, with messaging.system
// SystemProjection. A p that implements projection.Resetter keeps
// it, so Rebuild still works.
func (t *Telemetry) Projection(name string, p bus.Projection) bus.Projection {
	ip := instrumentedProjection{h: t.projectionMiddleware(name)(p), p: p}
	if r, ok := p.(projection.Resetter); ok {
		return resettableProjection{ip, r}
	}
	return ip
}

// projectionMiddleware is the handler middleware of projection name.
func (t *Telemetry) projectionMiddleware(name string) bus.Middleware {
	return t.busWith([]attribute.KeyValue{semconv.MessagingSystemKey.String(SystemProjection),
		FollowerKindKey.String(FollowerProjection), FollowerNameKey.String(name)}).Middleware()
}

type instrumentedProjection struct {
	h bus.Handler
	p bus.Projection
}

func (p instrumentedProjection) Handle(ctx context.Context, env eventsource.Envelope) error {
	return p.h.Handle(ctx, env)
}

func (p instrumentedProjection) EventTypes() []string { return p.p.EventTypes() }

type resettableProjection struct {
	instrumentedProjection
	r projection.Resetter
}

func (p resettableProjection) Reset(ctx context.Context) error { return p.r.Reset(ctx) }

// SQLProjection returns p instrumented for a projection.NewSQLRunner named
// name, as Projection instruments a bus.Projection: each event it applies
// is a consumer span under the context the event was saved with, measured
// like a handler's. A p that implements projection.SQLResetter keeps it.
func (t *Telemetry) SQLProjection(name string, p projection.SQL) projection.SQL {
	ip := instrumentedSQL{h: t.projectionMiddleware(name)(sqlApply{p}), p: p}
	if r, ok := p.(projection.SQLResetter); ok {
		return resettableSQL{ip, r}
	}
	return ip
}

type instrumentedSQL struct {
	h bus.Handler
	p projection.SQL
}

// txKey carries Apply's transaction through the middleware to sqlApply.
type txKey struct{}

func (p instrumentedSQL) Apply(ctx context.Context, tx *sql.Tx, env eventsource.Envelope) error {
	return p.h.Handle(context.WithValue(ctx, txKey{}, tx), env)
}

func (p instrumentedSQL) EventTypes() []string { return p.p.EventTypes() }

// sqlApply is the projection's Apply as the middleware's next handler.
type sqlApply struct{ p projection.SQL }

func (a sqlApply) Handle(ctx context.Context, env eventsource.Envelope) error {
	tx, _ := ctx.Value(txKey{}).(*sql.Tx)
	return a.p.Apply(ctx, tx, env)
}

type resettableSQL struct {
	instrumentedSQL
	r projection.SQLResetter
}

func (p resettableSQL) Reset(ctx context.Context, tx *sql.Tx) error { return p.r.Reset(ctx, tx) }
