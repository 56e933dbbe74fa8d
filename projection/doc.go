// Package projection builds read models from the event store: a Runner
// feeds a projection the events of the types it declares, in global order,
// from a named checkpoint, so it catches up after downtime, follows live,
// and can be rebuilt from scratch.
//
// # Running a projection
//
// NewRunner runs a Projection (the bus's interface: EventTypes and
// Handle). Run catches up, then waits: it wakes as soon as the store
// announces an append (the memory and SQLite stores in-process, PostgreSQL
// across processes with LISTEN/NOTIFY) and polls as a fallback. The
// checkpoint is saved in batches (WithCheckpoint: every 1,000 events or
// every second by default, and at the end of every pass and at a graceful
// stop), so catching up costs a write per thousand events, not per event;
// a crash applies again at most what was applied since the last save.
//
// NewSQLRunner runs a SQL projection, whose read model lives in a SQL
// database: each batch of events and the checkpoint commit in one
// transaction, so even a crash never applies an event twice to the read
// model. The checkpoint update is conditional on where the batch started,
// which also fences off a second runner that should not be running.
//
// # Failures
//
// A store failure is retried with backoff for as long as Run runs. A
// projection failing on an event is retried with backoff up to
// WithMaxAttempts times; then the runner halts (Run returns a *HaltError,
// and Status says halted) or, WithParking, records the event as parked
// with its error and goes on.
//
// # One instance, or many
//
// WithLease makes Run apply events only while the runner holds a lease
// (eventstore.Lease: a row in SQLite or PostgreSQL), so among the processes
// running the same projection exactly one is active and another takes over
// within the lease's TTL when it dies. Status reports position, head, lag
// in events and in time, and the state: catching_up, live, retrying,
// standby, halted or stopped.
//
// A single runner applies events one at a time, in global order. To spread
// one projection over several instances, run it from a consumer group on
// the Kafka bus instead: every member of the group subscribes the same
// projection with bus.SubscribeProjection and the same group name, the
// repository (or its outbox Relay) publishes every event keyed by its
// aggregate ID, so all of one aggregate's events land in one partition,
// which one member consumes at a time, in order. Each event is applied
// once per group (at least once across a crash: make the projection
// idempotent, e.g. by keeping each aggregate's last applied version), each
// aggregate's events in order, and the group rebalances partitions when a
// member joins or dies. What is given up is the global order across
// aggregates, which a per-aggregate read model does not need.
//
//	b, _ := kafka.New(ctx, kafka.Config{Brokers: brokers, Group: "order-totals", ...})
//	bus.SubscribeProjection(b, totals)
//	b.Start(ctx)
package projection
