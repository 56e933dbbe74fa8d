package consumer_test

import (
	"fmt"
	"slices"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// ExampleRetryPolicy shows the waits between attempts of a failing handler
// on a broker bus (Jitter 0 makes them exact), and when it is given up.
func ExampleRetryPolicy() {
	p := consumer.RetryPolicy{MaxRetries: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Multiplier: 3}
	if err := p.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	for failures := 1; failures < p.MaxRetries; failures++ {
		fmt.Printf("after failure %d: wait %v\n", failures, p.Backoff(failures))
	}
	fmt.Println("dead-lettered after", p.MaxRetries, "attempts; waits in all:", p.MaxTotalBackoff())
	// Output:
	// after failure 1: wait 100ms
	// after failure 2: wait 300ms
	// after failure 3: wait 900ms
	// after failure 4: wait 1s
	// dead-lettered after 5 attempts; waits in all: 2.3s
}

// ExampleReasonFor classifies what a consumer could not decode: the reason
// its dead letter carries.
func ExampleReasonFor() {
	codec := eventsource.NewJSONCodec(eventsource.NewRegistry()) // knows no type
	_, err := codec.Unmarshal([]byte(`not json`))
	fmt.Println(consumer.ReasonFor(err))
	_, err = codec.Unmarshal([]byte(`{"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"OrderPlaced","data":{}}`))
	fmt.Println(consumer.ReasonFor(err))
	// Output:
	// malformed
	// unknown_type
}

// ExampleDefaultHandlerName: a subscription without bus.WithName is named
// after its event types, sorted, so every process names it the same.
func ExampleDefaultHandlerName() {
	types := []string{"OrderPlaced", "OrderCancelled"}
	slices.Sort(types)
	fmt.Println(consumer.DefaultHandlerName(types))
	// Output: OrderCancelled,OrderPlaced
}
