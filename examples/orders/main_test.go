package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

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
	for _, args := range [][]string{{"-bus", "nats"}, {"-store", "mongo"}} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "unknown") {
			t.Errorf("run %v = %v, want an 'unknown' error", args, err)
		}
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
