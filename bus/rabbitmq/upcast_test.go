package rabbitmq

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource/bus/bustest"
)

// Messages an older producer published (a former type name, older schema
// versions) reach the handler as the current struct; one from a newer
// release is dead-lettered as unknown_version. The renamed one goes
// straight into the group's queue, where it was routed before the rename:
// the queue is bound for current names only.
func TestUpcastsOldMessages(t *testing.T) {
	url := amqpURL(t)
	cfg := Config{URL: url, Registry: bustest.UpcastRegistry(t), Exchange: exchange(), Group: "g"}
	cleanupTopology(t, url, cfg, "g")
	b := open(t, cfg)
	defer closeBus(t, b)
	rec := bustest.NewRecorder()
	if _, err := b.Subscribe("PriceChanged", rec); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)

	for _, m := range bustest.OldMessages("item-1") {
		exchange, key := cfg.Exchange, "Item."+m.Type
		if m.Type != "PriceChanged" {
			exchange, key = "", b.names.Queue // the default exchange routes by queue name
		}
		publishRaw(t, url, exchange, key, amqp.Publishing{Headers: amqp.Table{hEventType: m.Type, hAggID: "item-1"}, Body: m.Body})
	}
	bustest.CheckUpcastDelivery(t, rec, b.DeadLetters())
}
