package consumer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// RetryPolicy says how often and how soon failed handlers run again.
type RetryPolicy struct {
	// MaxRetries is the number of attempts, the first one included, after
	// which an event whose handlers keep failing is dead-lettered. 1 means
	// no retry. Default 5.
	MaxRetries int
	// InitialBackoff is the wait after the first failure (default 100ms);
	// each further failure multiplies it by Multiplier (default 2), up to
	// MaxBackoff (default 5s).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
	// Jitter spreads each wait uniformly over ±Jitter of it (0 to 1), so
	// that consumers failing together do not retry in lockstep. 0 means
	// none; the default policy uses 0.2.
	Jitter float64
}

// DefaultRetryPolicy returns the policy used when none is given.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxRetries: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second, Multiplier: 2, Jitter: 0.2}
}

// WithDefaults returns p with zero fields set from DefaultRetryPolicy; the
// zero policy becomes the default policy, jitter included.
func (p RetryPolicy) WithDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	if p == (RetryPolicy{}) {
		return d
	}
	if p.MaxRetries == 0 {
		p.MaxRetries = d.MaxRetries
	}
	if p.InitialBackoff == 0 {
		p.InitialBackoff = d.InitialBackoff
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = max(d.MaxBackoff, p.InitialBackoff)
	}
	if p.Multiplier == 0 {
		p.Multiplier = d.Multiplier
	}
	return p
}

// Validate reports a policy that cannot work.
func (p RetryPolicy) Validate() error {
	var errs []error
	if p.MaxRetries < 1 {
		errs = append(errs, fmt.Errorf("MaxRetries must be at least 1, got %d", p.MaxRetries))
	}
	if p.InitialBackoff < 0 || p.MaxBackoff < p.InitialBackoff {
		errs = append(errs, fmt.Errorf("backoff must satisfy 0 <= InitialBackoff (%v) <= MaxBackoff (%v)", p.InitialBackoff, p.MaxBackoff))
	}
	if p.Multiplier < 1 {
		errs = append(errs, fmt.Errorf("Multiplier must be at least 1, got %v", p.Multiplier))
	}
	if p.Jitter < 0 || p.Jitter > 1 {
		errs = append(errs, fmt.Errorf("Jitter must be within [0, 1], got %v", p.Jitter))
	}
	return errors.Join(errs...)
}

// Backoff returns the wait after the given number of failed attempts
// (1 after the first failure), with jitter applied.
func (p RetryPolicy) Backoff(failures int) time.Duration {
	return p.backoff(failures, rand.Float64())
}

// backoff is Backoff with the random draw u in [0, 1) given, for tests.
func (p RetryPolicy) backoff(failures int, u float64) time.Duration {
	base := p.base(failures)
	if p.Jitter > 0 {
		base *= 1 + p.Jitter*(2*u-1)
	}
	return time.Duration(base)
}

// base is the wait before jitter, capped at MaxBackoff.
func (p RetryPolicy) base(failures int) float64 {
	d := float64(p.InitialBackoff) * math.Pow(p.Multiplier, float64(max(failures-1, 0)))
	return min(d, float64(p.MaxBackoff))
}

// MaxTotalBackoff is the longest an event can spend waiting between its
// attempts (jitter at its maximum). A transport that redelivers messages
// left unacknowledged for some time must wait longer than this.
func (p RetryPolicy) MaxTotalBackoff() time.Duration {
	var total float64
	for f := 1; f < p.MaxRetries; f++ {
		total += p.base(f) * (1 + p.Jitter)
	}
	return time.Duration(total)
}
