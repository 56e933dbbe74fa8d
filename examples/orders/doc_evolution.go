// # Schema evolution
//
// Events are stored forever and the code that reads them changes. In this
// example a price change was first stored in dollars,
//
//	{"type":"OrderRepriced","data":{"order_id":"o-1","price":19.99}}
//
// and is now cents plus a currency, so OrderRepriced declares
// SchemaVersion 2 and registerOrderEvolution registers one upcaster from
// version 1: a typed function from the old struct to the new one. New
// events are written with "schema_version":2; the old ones, which have no
// schema_version (version 1), are upcast on every read: the stores' Load
// and ReadAll, and every broker bus's consumer. Handlers and the aggregate
// only ever see OrderRepriced{Cents: 1999, Currency: "USD"}. An event from
// a newer release (schema_version 3) is an error matching
// eventsource.ErrUnknownSchemaVersion on read, and a dead letter with reason
// unknown_version on a bus, never a zero value. evolution_test.go reads
// rows of the old shape written straight into SQLite.
package main
