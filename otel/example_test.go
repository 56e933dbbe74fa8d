package otel_test

import (
	"context"
	"fmt"
	"slices"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/otel"
	"github.com/eventsource-go/eventsource/repository"
)

// Example instruments an in-process bus and a repository: one trace runs
// from the command's span through Save to the handler, and the handler's
// run is measured. A broker bus is set up the same way, with the
// middleware in its Config.Middleware.
func Example() {
	ctx := context.Background()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))

	// readme-otel {
	tel, err := otel.New(otel.WithTracerProvider(tp), otel.WithMeterProvider(mp))
	if err != nil {
		fmt.Println(err)
		return
	}
	bt := tel.Bus(otel.SystemInProcess, "") // on a broker: otel.SystemRedis and the group
	// The middleware measures and traces every handler run (a broker bus
	// takes it in Config.Middleware); Wrap traces every publish and reports
	// the bus's Stats and broker lag.
	b := bt.Wrap(bus.NewInProcess(bus.WithHandlerMiddleware(bt.Middleware())))
	defer b.Close(ctx)
	// readme-otel }
	_, _ = bus.On(b, func(ctx context.Context, e Good, env eventsource.Envelope) error {
		// ctx carries the consumer span: what the handler saves or
		// publishes joins the trace.
		return nil
	}, bus.WithName("audit"))
	// readme-otel {
	repo := repository.New(eventstore.NewMemory(), b, newAccount,
		repository.WithInstrumentation(tel.Repository()))
	// readme-otel }

	ctx, span := tp.Tracer("app").Start(ctx, "open account")
	a := newAccount()
	a.SetID("acct-7")
	a.Raise(Good{N: 1})
	if err := repo.Save(ctx, a); err != nil {
		fmt.Println(err)
		return
	}
	span.End()

	for _, s := range spans.Ended() {
		fmt.Printf("%-17s same trace: %v\n", s.Name(), s.SpanContext().TraceID() == span.SpanContext().TraceID())
	}
	var rm metricdata.ResourceMetrics
	_ = reader.Collect(ctx, &rm)
	var names []string
	for _, m := range rm.ScopeMetrics[0].Metrics {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	fmt.Println(slices.Contains(names, "messaging.process.duration"), slices.Contains(names, "messaging.client.sent.messages"))
	// Output:
	// append            same trace: true
	// process OtelGood  same trace: true
	// publish OtelGood  same trace: true
	// save OtelAccount  same trace: true
	// open account      same trace: true
	// true true
}
