package bus_test

import (
	"testing"

	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/bustest"
)

func TestInProcessConformance(t *testing.T) {
	bustest.Run(t, bustest.Features{Synchronous: true, OrderingPerAggregate: true},
		func(t *testing.T, cfg bustest.Config) bus.Bus {
			return bus.NewInProcess(bus.WithLogger(discardLogger()))
		})
}

func TestInProcessConcurrentHandlersConformance(t *testing.T) {
	bustest.Run(t, bustest.Features{Synchronous: true, OrderingPerAggregate: true},
		func(t *testing.T, cfg bustest.Config) bus.Bus {
			return bus.NewInProcess(bus.WithLogger(discardLogger()), bus.WithConcurrentHandlers(4))
		})
}

// asyncSubscriptions makes every subscription asynchronous, so the whole
// suite also runs through the buffered delivery path.
type asyncSubscriptions struct {
	*bus.InProcess
	policy bus.OverflowPolicy
}

func (a asyncSubscriptions) Subscribe(eventType string, h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return a.InProcess.Subscribe(eventType, h, append(opts, bus.Async(4, a.policy))...)
}

func (a asyncSubscriptions) SubscribeAll(h bus.Handler, opts ...bus.SubscribeOption) (bus.Subscription, error) {
	return a.InProcess.SubscribeAll(h, append(opts, bus.Async(4, a.policy))...)
}

func TestInProcessAsyncSubscribersConformance(t *testing.T) {
	bustest.Run(t, bustest.Features{OrderingPerAggregate: true},
		func(t *testing.T, cfg bustest.Config) bus.Bus {
			return asyncSubscriptions{InProcess: bus.NewInProcess(bus.WithLogger(discardLogger())), policy: bus.Block}
		})
}
