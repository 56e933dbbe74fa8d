// Package bench holds the benchmarks, side by side with peer libraries. It
// is a module of its own so that the peers never enter the framework's build.
package bench
