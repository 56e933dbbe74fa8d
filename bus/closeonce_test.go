package bus_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsource-go/eventsource/bus"
)

func TestCloseOnceRunsOnceAndSharesTheOutcome(t *testing.T) {
	var c bus.CloseOnce
	var runs atomic.Int32
	release := make(chan struct{})
	boom := errors.New("boom")
	closeFn := func() error {
		runs.Add(1)
		<-release
		return boom
	}
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { errs <- c.Do(context.Background(), closeFn) })
	}
	// A caller whose context ends stops waiting, with its own error.
	short, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	for runs.Load() == 0 {
		time.Sleep(time.Millisecond) // until the first call is inside closeFn
	}
	if err := c.Do(short, closeFn); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting caller with an expired context = %v, want DeadlineExceeded", err)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, boom) {
			t.Errorf("Do = %v, want the first call's error", err)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("close function ran %d times, want 1", n)
	}
	if err := c.Do(context.Background(), closeFn); !errors.Is(err, boom) || runs.Load() != 1 {
		t.Errorf("Do after the close = %v (runs %d), want the same error without running again", err, runs.Load())
	}
}
