// Command prometheus exports the framework's metrics to Prometheus through
// OpenTelemetry's Prometheus exporter: copy setupMetrics into a service and
// serve its handler on the port Prometheus scrapes.
//
//	go run . -addr :2112   # then curl localhost:2112/metrics
//
// It lives in a module of its own, so neither the core nor the otel module
// ever compiles the exporter or the Prometheus client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/otel"
)

// setupMetrics returns a Telemetry whose metrics a Prometheus registry
// collects, the handler that serves that registry, and the provider to
// shut down at exit.
func setupMetrics() (*otel.Telemetry, http.Handler, *sdkmetric.MeterProvider, error) {
	// A registry of our own rather than the client's global default.
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	tel, err := otel.New(otel.WithMeterProvider(mp))
	if err != nil {
		return nil, nil, nil, err
	}
	return tel, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), mp, nil
}

// OrderPlaced is the demo's event.
type OrderPlaced struct{ Cents int64 }

func (OrderPlaced) EventType() string { return "OrderPlaced" }

// newBus returns an instrumented in-process bus with one handler; a broker
// bus takes bt.Middleware() in its Config.Middleware instead.
func newBus(tel *otel.Telemetry) (bus.Bus, error) {
	bt := tel.Bus(otel.SystemInProcess, "")
	b := bt.Wrap(bus.NewInProcess(bus.WithHandlerMiddleware(bt.Middleware())))
	_, err := bus.On(b, func(_ context.Context, e OrderPlaced, _ eventsource.Envelope) error {
		if e.Cents < 0 {
			return errors.New("negative amount")
		}
		return nil
	}, bus.WithName("billing"))
	return b, err
}

func main() {
	addr := flag.String("addr", "127.0.0.1:2112", "where to serve /metrics")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, addr string) error {
	tel, metrics, mp, err := setupMetrics()
	if err != nil {
		return err
	}
	defer mp.Shutdown(context.WithoutCancel(ctx))
	b, err := newBus(tel)
	if err != nil {
		return err
	}
	defer b.Close(context.WithoutCancel(ctx))

	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	// Publish an event a second, so that the metrics move.
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for n := int64(1); ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				env := eventsource.NewEnvelope(OrderPlaced{Cents: n})
				env.AggregateType, env.AggregateID = "Order", fmt.Sprint(n)
				_ = b.Publish(ctx, env)
			}
		}
	}()
	log.Printf("serving metrics on http://%s/metrics", addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
