package pages

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"testing"

	"github.com/eventsource-go/eventsource"
)

// log is a fake store of n rows (positions 1..n) read in pages of size.
type log struct {
	n, size int
	failAt  int64 // a fetch reaching this position returns the rows before it and an error
	fetches atomic.Int32
	bounds  atomic.Int32
}

var errFetch = errors.New("fetch failed")

func (l *log) reader() Reader[int64] {
	return Reader[int64]{
		Size: l.size,
		Fetch: func(_ context.Context, bound int64, after *int64) ([]int64, error) {
			l.fetches.Add(1)
			from := int64(1)
			if after != nil {
				from = *after + 1
			}
			var rows []int64
			for p := from; p <= int64(l.n) && p <= bound && len(rows) < l.size; p++ {
				if p == l.failAt {
					return rows, errFetch
				}
				rows = append(rows, p)
			}
			return rows, nil
		},
		Bound: func(context.Context) (int64, error) {
			l.bounds.Add(1)
			return int64(l.n), nil
		},
		Decode: func(p *int64) (eventsource.Envelope, error) {
			return eventsource.Envelope{Position: *p}, nil
		},
	}
}

func TestSeqYieldsEveryRowInOrder(t *testing.T) {
	for _, tc := range []struct{ n, size, bounds int }{
		{0, 3, 0}, {2, 3, 0}, {3, 3, 1}, {10, 3, 1}, {12, 3, 1},
	} {
		l := &log{n: tc.n, size: tc.size}
		var got []int64
		for env, err := range l.reader().Seq(t.Context()) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, env.Position)
		}
		if len(got) != tc.n {
			t.Fatalf("%d rows in pages of %d: yielded %v", tc.n, tc.size, got)
		}
		for i, p := range got {
			if p != int64(i+1) {
				t.Fatalf("%d rows: yielded %v", tc.n, got)
			}
		}
		if int(l.bounds.Load()) != tc.bounds {
			t.Errorf("%d rows in pages of %d: bound read %d times, want %d (only after a full first page)",
				tc.n, tc.size, l.bounds.Load(), tc.bounds)
		}
	}
}

func TestSeqYieldsRowsBeforeAnError(t *testing.T) {
	for _, failAt := range []int64{2, 5} { // in the first page, in a prefetched one
		l := &log{n: 10, size: 3, failAt: failAt}
		var got []int64
		var errs []error
		for env, err := range l.reader().Seq(t.Context()) {
			if err != nil {
				errs = append(errs, err)
				continue
			}
			got = append(got, env.Position)
		}
		if len(got) != int(failAt-1) || len(errs) != 1 || !errors.Is(errs[0], errFetch) {
			t.Errorf("failing at %d: yielded %v and errors %v; want the %d rows before it, then the error once",
				failAt, got, errs, failAt-1)
		}
	}
}

func TestSeqStopsReadingWhenTheCallerStops(t *testing.T) {
	l := &log{n: math.MaxInt16, size: 3}
	n := 0
	for range l.reader().Seq(t.Context()) {
		if n++; n == 4 { // in the second page
			break
		}
	}
	// Seq returned after its reader ended (the race detector sees a
	// fetch after it); the reader read at most one page in the channel
	// and one in flight beyond the two the caller took.
	if f := l.fetches.Load(); f > 4 {
		t.Errorf("%d fetches for 2 pages read", f)
	}
}

func TestSeqCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	l := &log{n: 10, size: 3}
	var errs []error
	for _, err := range l.reader().Seq(ctx) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], context.Canceled) || l.fetches.Load() != 0 {
		t.Errorf("cancelled: yielded %v after %d fetches; want one context.Canceled, no fetch", errs, l.fetches.Load())
	}
}
