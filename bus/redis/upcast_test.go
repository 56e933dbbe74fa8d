package redis

import (
	"context"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource/bus/bustest"
)

// Entries an older producer added with XADD (a former type name, older
// schema versions) reach the handler as the current struct; one from a
// newer release is dead-lettered as unknown_version.
func TestUpcastsOldEntries(t *testing.T) {
	url, p := redisURL(t), prefix()
	cleanupKeys(t, url, p)
	b := open(t, Config{URL: url, Registry: bustest.UpcastRegistry(t), StreamPrefix: p, Group: "g"})
	defer closeBus(t, b)
	rec := bustest.NewRecorder()
	if _, err := b.Subscribe("PriceChanged", rec); err != nil {
		t.Fatal(err)
	}
	bustest.Start(t, b)

	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(opts)
	defer c.Close()
	for _, m := range bustest.OldMessages("item-1") {
		err := c.XAdd(context.Background(), &goredis.XAddArgs{Stream: keysFor(p, "g").events,
			Values: []any{fieldType, m.Type, fieldAggID, "item-1", fieldEnvelope, m.Body}}).Err()
		if err != nil {
			t.Fatal(err)
		}
	}
	bustest.CheckUpcastDelivery(t, rec, b.DeadLetters())
}
