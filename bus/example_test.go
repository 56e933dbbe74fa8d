package bus_test

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
)

type UserSignedUp struct{ Email string }

func (UserSignedUp) EventType() string { return "UserSignedUp" }

type UserLeft struct{ Email string }

func (UserLeft) EventType() string { return "UserLeft" }

func publish(b bus.Bus, events ...eventsource.Event) error {
	var envs []eventsource.Envelope
	for i, e := range events {
		env := eventsource.NewEnvelope(e)
		env.AggregateType, env.AggregateID, env.Version = "User", "u1", int64(i+1)
		envs = append(envs, env)
	}
	return b.Publish(context.Background(), envs...)
}

// ExampleOn subscribes a typed handler: it receives the event as its Go
// type. The in-process bus runs it before Publish returns.
func ExampleOn() {
	b := bus.NewInProcess()
	defer b.Close(context.Background())
	_, err := bus.On(b, func(ctx context.Context, e UserSignedUp, env eventsource.Envelope) error {
		fmt.Println("welcome", e.Email, "version", env.Version)
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Start is a no-op on the in-process bus; code that calls it runs on
	// every bus.
	if err := b.Start(context.Background()); err != nil {
		fmt.Println(err)
	}
	if err := publish(b, UserSignedUp{Email: "ada@example.com"}, UserLeft{Email: "ada@example.com"}); err != nil {
		fmt.Println(err)
	}
	fmt.Println("published:", b.Stats().Published)
	// Output:
	// welcome ada@example.com version 1
	// published: 2
}

// members is a projection: a handler that declares the types it reads.
type members struct {
	mu     sync.Mutex
	emails map[string]bool
}

func (m *members) EventTypes() []string { return []string{"UserSignedUp", "UserLeft"} }
func (m *members) Handle(_ context.Context, env eventsource.Envelope) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch e := env.Event.(type) {
	case UserSignedUp:
		m.emails[e.Email] = true
	case UserLeft:
		delete(m.emails, e.Email)
	}
	return nil
}

// ExampleSubscribeProjection feeds a projection the types it declares.
func ExampleSubscribeProjection() {
	b := bus.NewInProcess()
	defer b.Close(context.Background())
	m := &members{emails: map[string]bool{}}
	if _, err := bus.SubscribeProjection(b, m, bus.WithName("members")); err != nil {
		fmt.Println(err)
		return
	}
	_ = publish(b, UserSignedUp{Email: "ada@example.com"}, UserSignedUp{Email: "grace@example.com"}, UserLeft{Email: "ada@example.com"})
	var emails []string
	for e := range m.emails {
		emails = append(emails, e)
	}
	sort.Strings(emails)
	fmt.Println(emails, b.Stats().Subscribers["UserLeft"])
	// Output: [grace@example.com] 1
}

// ExampleSubscriptionOf builds a bus-wide middleware that knows which
// subscription each handler chain is for: the label is made once per
// subscription, when its chain is built, not once per event.
func ExampleSubscriptionOf() {
	counting := func(next bus.Handler) bus.Handler {
		info, _ := bus.SubscriptionOf(next)
		label := fmt.Sprintf("%s %v", info.Name, info.EventTypes)
		return bus.HandlerFunc(func(ctx context.Context, env eventsource.Envelope) error {
			fmt.Println(label, "handles", env.Type)
			return next.Handle(ctx, env)
		})
	}
	b := bus.NewInProcess(bus.WithHandlerMiddleware(counting))
	defer b.Close(context.Background())
	_, _ = bus.On(b, func(context.Context, UserSignedUp, eventsource.Envelope) error { return nil }, bus.WithName("welcome-mail"))
	_, _ = b.SubscribeAll(bus.HandlerFunc(func(context.Context, eventsource.Envelope) error { return nil }), bus.WithName("audit"))
	_ = publish(b, UserSignedUp{Email: "ada@example.com"})
	// Output:
	// welcome-mail [UserSignedUp] handles UserSignedUp
	// audit [] handles UserSignedUp
}
