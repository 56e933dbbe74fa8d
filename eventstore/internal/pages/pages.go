// Package pages is the read loop the SQL stores share: it runs a paged
// query, reading the next page while the caller decodes and handles the
// current one, so that a long read (a projection catching up, the outbox
// relay) keeps the database and the decoding busy at the same time.
package pages

import (
	"context"
	"iter"
	"math"

	"github.com/eventsource-go/eventsource"
)

// Reader says how to read one store's pages. R is a row as the query
// returns it, before its payload is decoded.
type Reader[R any] struct {
	// Size is the page size: a shorter page is the last one.
	Size int
	// Fetch reads the page after the row after (nil: the first page),
	// up to position bound. On error it returns the rows read before it,
	// which are yielded before the error.
	Fetch func(ctx context.Context, bound int64, after *R) ([]R, error)
	// Bound returns the log's last committed position. It is read after a
	// full first page, before anything is yielded, and bounds the later
	// pages: the read ends at what was committed when it began, even if
	// the caller appends while it ranges.
	Bound func(ctx context.Context) (int64, error)
	// Decode turns a row into an envelope.
	Decode func(*R) (eventsource.Envelope, error)
}

// page is what the prefetching goroutine hands on.
type page[R any] struct {
	rows []R
	err  error
}

// Seq yields every row of every page, decoded, then stops at the first
// short page or error, which it yields once. The first page is read on the
// caller's goroutine (most reads of one stream fit in it); after a full
// one, a goroutine reads the following pages one ahead, holding a
// connection only while it reads a page, never while the caller's loop
// body runs. When the caller stops early, Seq waits for that goroutine,
// which finishes the page it is reading and stops.
func (r Reader[R]) Seq(ctx context.Context) iter.Seq2[eventsource.Envelope, error] {
	return func(yield func(eventsource.Envelope, error) bool) {
		if err := ctx.Err(); err != nil {
			yield(eventsource.Envelope{}, err)
			return
		}
		rows, err := r.Fetch(ctx, math.MaxInt64, nil)
		full := err == nil && len(rows) == r.Size
		bound := int64(math.MaxInt64)
		if full {
			bound, err = r.Bound(ctx)
		}
		if !r.yieldPage(ctx, rows, err, yield) || !full {
			return
		}

		next := make(chan page[R], 1)
		stop := make(chan struct{})
		go func() {
			defer close(next)
			after := &rows[len(rows)-1]
			for {
				select {
				case <-stop: // the caller is gone: no page it will not read
					return
				default:
				}
				rows, err := r.Fetch(ctx, bound, after)
				select {
				case next <- page[R]{rows, err}:
				case <-stop:
					return
				}
				if err != nil || len(rows) < r.Size {
					return
				}
				after = &rows[len(rows)-1]
			}
		}()
		defer func() {
			close(stop)
			for range next { // wait for the reader to finish
			}
		}()
		for p := range next {
			if !r.yieldPage(ctx, p.rows, p.err, yield) {
				return
			}
		}
	}
}

// yieldPage decodes and yields rows, then err if any. It reports whether
// the caller wants more and nothing failed.
func (r Reader[R]) yieldPage(ctx context.Context, rows []R, err error, yield func(eventsource.Envelope, error) bool) bool {
	for i := range rows {
		if cerr := ctx.Err(); cerr != nil {
			yield(eventsource.Envelope{}, cerr)
			return false
		}
		env, derr := r.Decode(&rows[i])
		if derr != nil {
			yield(eventsource.Envelope{}, derr)
			return false
		}
		if !yield(env, nil) {
			return false
		}
	}
	if err != nil {
		yield(eventsource.Envelope{}, err)
		return false
	}
	return true
}
