package testenv

import (
	"testing"
)

func TestURLReturnsTheVariable(t *testing.T) {
	t.Setenv("EVENTSOURCE_TESTENV_PROBE", "postgres://x")
	if got := URL(t, "EVENTSOURCE_TESTENV_PROBE", "set it"); got != "postgres://x" {
		t.Fatalf("URL = %q", got)
	}
}

// fakeTB records how URL ends a test without ending this one.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Skip(...any)           { f.skipped = true }
func (f *fakeTB) Fatalf(string, ...any) { f.failed = true }

func TestURLSkipsOrFails(t *testing.T) {
	t.Setenv("EVENTSOURCE_TESTENV_PROBE", "")
	t.Setenv(RequireVar, "")
	f := &fakeTB{TB: t}
	URL(f, "EVENTSOURCE_TESTENV_PROBE", "set it")
	if !f.skipped || f.failed {
		t.Fatalf("without %s: skipped %v, failed %v; want a skip", RequireVar, f.skipped, f.failed)
	}
	t.Setenv(RequireVar, "1")
	f = &fakeTB{TB: t}
	URL(f, "EVENTSOURCE_TESTENV_PROBE", "set it")
	if !f.failed {
		t.Fatalf("with %s=1: failed %v; want a failure", RequireVar, f.failed)
	}
}
