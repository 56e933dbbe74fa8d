// Package eventsource holds the core model of the framework: domain events,
// the envelope that carries one event with its facts, the registry that maps
// type names back to Go types, and the codec that turns envelopes into bytes.
//
// The other packages build on it: aggregate (decide and raise events),
// eventstore (persist them with optimistic concurrency), bus (publish them to
// handlers, projections and sagas) and repository (tie the three together).
package eventsource
