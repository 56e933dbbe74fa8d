package kafka

import (
	"context"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource/bus/bustest"
)

// Records an older producer wrote (a former type name, older schema
// versions) reach the handler as the current struct; one from a newer
// release is dead-lettered as unknown_version.
func TestUpcastsOldRecords(t *testing.T) {
	cfg := Config{Topic: uniqueTopic("kt-upcast"), Group: "g", Partitions: 1, Registry: bustest.UpcastRegistry(t)}
	b := open(t, cfg)
	defer closeBus(t, b)
	rec := bustest.NewRecorder()
	if _, err := b.Subscribe("PriceChanged", rec); err != nil {
		t.Fatal(err)
	}
	// A new group reads from the first offset: writing before Start is
	// what a backlog left by the older release looks like.
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections() // no kafka-go goroutine outlives the test
	w := &kafkago.Writer{Addr: kafkago.TCP(testConfig(t, Config{}).Brokers...), RequiredAcks: kafkago.RequireAll, Transport: tr}
	defer w.Close()
	var msgs []kafkago.Message
	for _, m := range bustest.OldMessages("item-1") {
		msgs = append(msgs, kafkago.Message{Topic: cfg.Topic, Key: []byte("item-1"), Value: m.Body,
			Headers: []kafkago.Header{{Key: hdrEventType, Value: []byte(m.Type)}, {Key: hdrAggregateID, Value: []byte("item-1")}}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)
	bustest.CheckUpcastDelivery(t, rec, b.DeadLetters())
}
