package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run when a test left a file in the package's
// directory (the tests run there): the example's default orders.db once
// stayed behind in the tree.
//
// With runMainVar set, the test binary is the example itself (see
// startExample): tests run it as a process to send it signals.
func TestMain(m *testing.M) {
	if os.Getenv(runMainVar) == "1" {
		main()
		return
	}
	before, err := os.ReadDir(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	after, err := os.ReadDir(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	names := func(es []os.DirEntry) []string {
		var s []string
		for _, e := range es {
			s = append(s, e.Name())
		}
		return s
	}
	for _, name := range names(after) {
		if !slices.Contains(names(before), name) {
			fmt.Fprintf(os.Stderr, "FAIL: the tests left %s in examples/orders\n", name)
			code = 1
		}
	}
	os.Exit(code)
}

// The figures the issue asks the walkthrough to print on the in-process bus.
var wantFigures = []string{
	"total revenue: $450.00",
	"placed: 1, shipped: 1, cancelled: 1",
	"notifications sent: 3",
	"audit log: 5 events",
	"events published: 5",
	"handlers invoked: 13",
	"handler errors: 0",
	"subscribers for OrderPlaced: 2",
	"wildcard subscribers: 1",
}

func TestWalkthroughPrintsFigures(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-store", "memory", "-bus", "memory"}, &out, io.Discard); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range wantFigures {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestUnknownBackendsAreClearErrors(t *testing.T) {
	t.Chdir(t.TempDir()) // where the default orders.db would go
	for _, args := range [][]string{{"-bus", "nats"}, {"-store", "mongo"}} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "unknown") {
			t.Errorf("run %v = %v, want an 'unknown' error", args, err)
		}
	}
}

// TestHelpExitsZero: -h prints the flags and what each backend needs, and
// is a success.
func TestHelpExitsZero(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		var stderr bytes.Buffer
		err := run(context.Background(), []string{arg}, io.Discard, &stderr)
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("run %s = %v, want flag.ErrHelp", arg, err)
		}
		if code := exitCode(err, io.Discard); code != 0 {
			t.Errorf("%s exits %d, want 0", arg, code)
		}
		for _, want := range []string{"-bus", "-store", "-redis-url", "-amqp-url", "-kafka-brokers", "-postgres-url", "-bus kafka", "need a server",
			"Redis 6.2 or later"} { // what bus/redis needs (XAUTOCLAIM), as the README says
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("%s output lacks %q:\n%s", arg, want, stderr.String())
			}
		}
	}
}

// TestBadFlagsCreateNothing: a command line the example cannot run fails
// with status 2 before any store is opened, so no orders.db appears.
func TestBadFlagsCreateNothing(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, args := range [][]string{
		{"-bus", "nats"}, {"-store", "mongo"}, {"-no-such-flag"}, {"extra"},
		{"-store", "postgres", "-postgres-url", ""}, {"-timeout", "0s"},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), args, io.Discard, &stderr)
		if code := exitCode(err, &stderr); code != 2 {
			t.Errorf("run %q: exit %d (%v), want 2", args, code, err)
		}
		if !strings.Contains(stderr.String(), "orders") {
			t.Errorf("run %q said nothing on stderr", args)
		}
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			t.Fatalf("run %q created %s", args, entries[0].Name())
		}
	}
}

// TestWaitSaysWhatItWaitsFor: a wait for handlers that lasts prints what
// is still missing, and a timeout names it.
func TestWaitSaysWhatItWaitsFor(t *testing.T) {
	var out bytes.Buffer
	err := waitFor(context.Background(), 300*time.Millisecond, 20*time.Millisecond, &out, func() (string, bool) {
		return "audit log 3/5 events", false
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waitFor = %v, want a deadline", err)
	}
	if !strings.Contains(out.String(), "still waiting for the handlers") || !strings.Contains(out.String(), "audit log 3/5 events") {
		t.Errorf("the wait said nothing useful:\n%s", out.String())
	}
	out.Reset()
	calls := 0
	if err := waitFor(context.Background(), time.Minute, time.Minute, &out, func() (string, bool) {
		calls++
		return "", calls > 2
	}); err != nil || out.Len() != 0 {
		t.Errorf("a quick wait: %v, printed %q", err, out.String())
	}
}

func TestSQLiteKeepsHistoryAcrossRuns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orders.db")
	for i, want := range []string{"store history: 5 events in total\n", "store history: 10 events in total (5 from earlier runs)\n"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"-sqlite-path", path}, &out, io.Discard); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "total revenue: $450.00") {
			t.Errorf("run %d lacks %q or the figures:\n%s", i+1, want, out.String())
		}
	}
}
