// Package saga runs process managers: long-running business processes that
// react to events, keep state per association (an order ID, a correlation
// ID), send commands to aggregates, wait with durable deadlines, and end.
//
// A Saga[S] declares, per event type, how the event maps to an instance
// (Associate), whether it may start one (Starts) or ends it (Ends), and
// what to do (a handler that changes the state S, dispatches commands and
// schedules deadlines through a Scope). A Runner executes it on a Store of
// instances (NewMemoryStore, NewSQLiteStore, NewPostgresStore), fed by any
// bus (Subscribe) or by the event store through a Follower (Follow), and
// fires deadlines from RunDeadlines.
//
// Guarantees, under the at-least-once delivery of every bus and follower:
//
//   - One delivery at a time per instance, across processes: a delivery
//     loads the instance, runs the handler, and saves the new state with
//     the processed event's ID, the commands to dispatch (an outbox) and
//     the deadlines in one write checked against the version it loaded.
//     A concurrent delivery that saved first makes the write fail with
//     ErrConflict; the runner reloads and runs the handler again, so
//     handlers must act only through their Scope.
//   - An event delivered twice changes the state once and dispatches its
//     commands once: its ID is in the instance's processed list. Commands
//     are dispatched after the write commits and removed from the outbox
//     once dispatched; a crash in between dispatches them again on the
//     next delivery, with the same deterministic ID (CommandID), so a
//     command handler that may see a repeat recognises it.
//   - Commands run with the triggering event's correlation (its
//     CorrelationID, else its ID) and causation (its ID) in their ctx
//     (eventsource.WithMetadata), so a repository saving from them stamps
//     both on the events it stores.
//   - A deadline is stored with the state, in the same write. RunDeadlines
//     claims due deadlines for a while (so several instances of the
//     runner do not race for them) and fires each as a delivery that
//     removes it from the instance: the version check lets exactly one
//     firing of a deadline commit, even if two runners fire it.
//
// Ended instances stay in the store, because their record is what makes a
// late redelivery of their events a no-op. PurgeEnded (Purger, which every
// store here implements) deletes those that ended before a cutoff, to
// bound the store's size; after that, a redelivered starting event would
// start a new instance. Keep ended instances for longer than the longest
// redelivery or replay window of the buses that feed the saga, dead-letter
// replays included, e.g. by calling PurgeEnded(ctx, saga, now-retention)
// once a day.
//
// Due times, claims and end times are on the runner's clock (WithClock):
// processes that share a store should have clocks in step, to within what a
// deadline may be late.
package saga
