//go:build race

package bench

// raceEnabled: the race detector changes allocation counts, so the
// zero-allocation checks skip under it.
const raceEnabled = true
