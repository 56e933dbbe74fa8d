package bus

// Stats is a snapshot of a bus's counters. Every bus fills the fields that
// apply to it; the in-process bus has no broker, so it leaves Received,
// Retries, Reclaimed and Reconnects at zero.
type Stats struct {
	Published       uint64 // events accepted by Publish and PublishAsync
	Received        uint64 // events read from the broker by this instance
	Delivered       uint64 // events handed to a subscription (one per event per subscription)
	HandlersInvoked uint64 // handler calls, retries included
	HandlerErrors   uint64 // calls that returned an error or panicked
	HandlerPanics   uint64 // calls that panicked (also counted in HandlerErrors)
	Handled         uint64 // events fully handled and acknowledged
	Retries         uint64 // deliveries scheduled again after a failure
	DeadLettered    uint64 // events moved to a dead-letter destination
	Reclaimed       uint64 // events taken over from a consumer that stopped
	Dropped         uint64 // events discarded by an asynchronous subscriber's overflow policy or a forced close
	InFlight        int64  // events being handled now
	BackgroundTasks int64  // events queued or running via PublishAsync
	Reconnects      uint64 // connections re-established after a loss

	// Subscribers counts subscriptions per event type, wildcards excluded.
	Subscribers map[string]int
	// WildcardSubscribers counts SubscribeAll subscriptions.
	WildcardSubscribers int
}
