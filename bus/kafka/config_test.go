package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/eventsource-go/eventsource"
)

func TestConfigDefaultsAndValidate(t *testing.T) {
	def := Config{Brokers: []string{"localhost:9092"}, Registry: eventsource.NewRegistry()}.WithDefaults()
	if err := def.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	// The three kafka-go defaults the bus must not inherit.
	if def.Acks != AcksAll || def.Acks.required() != -1 {
		t.Errorf("acks default %v", def.Acks)
	}
	// kafka-go stops heartbeating when a generation ends, so a drain
	// longer than the session gets the member expelled mid-drain.
	if def.DrainTimeout >= def.SessionTimeout {
		t.Errorf("drain default %v, want shorter than the session (%v)", def.DrainTimeout, def.SessionTimeout)
	}
	if def.BatchTimeout != time.Millisecond || def.BatchSize != 1000 {
		t.Errorf("batch default %v, %d", def.BatchTimeout, def.BatchSize)
	}
	if got := def.Topics(); strings.Join(got, " ") != "eventsource.events eventsource.events.retry.default eventsource.events.dlq.default" {
		t.Errorf("topics %v", got)
	}
	per := Config{Brokers: []string{"k:9092"}, Registry: eventsource.NewRegistry(), Topic: "svc", Group: "billing",
		TopicPerAggregateType: true, AggregateTypes: []string{"Order", "Customer"}}.WithDefaults()
	if err := per.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := per.Topics(); strings.Join(got, " ") != "svc.Customer svc.Order svc.retry.billing svc.dlq.billing" {
		t.Errorf("per-aggregate topics %v", got)
	}
	if per.topicFor("Order") != "svc.Order" || per.topicFor("Invoice") != "" {
		t.Errorf("topicFor: %q %q", per.topicFor("Order"), per.topicFor("Invoice"))
	}
	for name, bad := range map[string]Config{
		"no brokers":         {Registry: eventsource.NewRegistry()},
		"broker no port":     {Brokers: []string{"localhost"}, Registry: eventsource.NewRegistry()},
		"no registry":        {Brokers: []string{"k:1"}},
		"bad topic":          {Brokers: []string{"k:1"}, Registry: eventsource.NewRegistry(), Topic: "a/b"},
		"bad group":          {Brokers: []string{"k:1"}, Registry: eventsource.NewRegistry(), Group: "a b"},
		"per-type no types":  {Brokers: []string{"k:1"}, Registry: eventsource.NewRegistry(), TopicPerAggregateType: true},
		"heartbeat":          {Brokers: []string{"k:1"}, Registry: eventsource.NewRegistry(), SessionTimeout: time.Second, HeartbeatInterval: time.Second},
		"drain":              {Brokers: []string{"k:1"}, Registry: eventsource.NewRegistry(), DrainTimeout: time.Minute},
		"drain past session": {Brokers: []string{"k:1"}, Registry: eventsource.NewRegistry(), DrainTimeout: 12 * time.Second},
		"acks":               {Brokers: []string{"k:1"}, Registry: eventsource.NewRegistry(), Acks: 7},
	} {
		if err := bad.WithDefaults().Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate = %v, want ErrInvalidConfig", name, err)
		}
	}
}

func TestConfigLogHidesSASLPassword(t *testing.T) {
	cfg := Config{Brokers: []string{"k:9092"}, SASL: plain.Mechanism{Username: "u", Password: "s3cret"}}
	for _, s := range []string{cfg.String(), fmt.Sprint(cfg), cfg.LogValue().String()} {
		if strings.Contains(s, "s3cret") || !strings.Contains(s, "PLAIN") {
			t.Errorf("config prints as %q", s)
		}
	}
}

func TestNewFailsFastWithoutBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := New(ctx, Config{Brokers: []string{"127.0.0.1:1"}, Registry: eventsource.NewRegistry(), DialTimeout: time.Second})
	if err == nil {
		t.Fatal("New against a closed port succeeded")
	}
}
