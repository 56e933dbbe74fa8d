package main

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/eventsource-go/eventsource"
)

// TestScrape publishes a good and a failing event and scrapes the
// exporter's handler as Prometheus would.
func TestScrape(t *testing.T) {
	ctx := context.Background()
	tel, metrics, mp, err := setupMetrics()
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Shutdown(ctx)
	b, err := newBus(tel)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	for i, cents := range []int64{100, -1} {
		env := eventsource.NewEnvelope(OrderPlaced{Cents: cents})
		env.AggregateType, env.AggregateID = "Order", string(rune('a'+i))
		if err := b.Publish(ctx, env); err != nil {
			t.Fatal(err)
		}
	}

	srv := httptest.NewServer(metrics)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	text := string(body)
	for _, want := range []string{
		`eventsource_bus_handled_total{`,
		`eventsource_bus_handler_errors_total{`,
		`messaging_client_sent_messages_total{`,
		`messaging_process_duration_seconds_bucket{`,
		`eventsource_event_latency_seconds_count{`,
		`eventsource_outcome="error"`,
		`messaging_system="eventsource_inprocess"`,
		`eventsource_handler_name="billing"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the scrape lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", text)
	}
}
