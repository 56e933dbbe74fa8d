package testenv

import (
	"net"
	"strings"
	"testing"
)

func TestURLReturnsTheVariable(t *testing.T) {
	t.Setenv("EVENTSOURCE_TESTENV_PROBE", "postgres://x")
	f := &fakeTB{TB: t} // the marker is not logged on t: no service was used
	if got := URL(f, "EVENTSOURCE_TESTENV_PROBE", "set it"); got != "postgres://x" || f.skipped || f.failed {
		t.Fatalf("URL = %q (skipped %v, failed %v)", got, f.skipped, f.failed)
	}
	if len(f.msgs) != 1 || !strings.HasPrefix(f.msgs[0], "%s") {
		t.Fatalf("logged %q, want the marker line", f.msgs)
	}
}

// fakeTB records how URL ends a test without ending this one.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msgs            []string
}

func (f *fakeTB) Helper()                      {}
func (f *fakeTB) Skip(args ...any)             { f.skipped = true; f.msgs = append(f.msgs, args[0].(string)) }
func (f *fakeTB) Fatalf(string, ...any)        { f.failed = true }
func (f *fakeTB) Logf(format string, _ ...any) { f.msgs = append(f.msgs, format) }

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

// withService registers a service whose default address is addr for the
// test's duration.
func withService(t *testing.T, name, def string) {
	t.Helper()
	Services[name] = Service{Var: name, Name: "Probe", Default: def}
	t.Cleanup(func() { delete(Services, name) })
	t.Setenv(name, "")
	t.Setenv(RequireVar, "")
}

// TestURLFindsTheStandardPort: with the variable unset, the service's
// default URL is used when its port answers, and the test says so.
func TestURLFindsTheStandardPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	def := "probe://user:secret@" + ln.Addr().String() + "/0"
	withService(t, "EVENTSOURCE_TESTENV_LISTENING", def)
	f := &fakeTB{TB: t}
	if got := URL(f, "EVENTSOURCE_TESTENV_LISTENING", "set it"); got != def || f.skipped {
		t.Fatalf("URL = %q (skipped %v), want the default %q", got, f.skipped, def)
	}
	v, source, ok, _ := Lookup("EVENTSOURCE_TESTENV_LISTENING")
	if !ok || v != def || !strings.Contains(source, "answered on "+ln.Addr().String()) {
		t.Fatalf("Lookup = %q, %q, %v", v, source, ok)
	}
	if redactedAddress(def) == def || strings.Contains(redactedAddress(def), "secret") {
		t.Fatalf("the logged address keeps the password: %s", redactedAddress(def))
	}
}

// TestURLSkipsWhenThePortIsClosed: nothing listening on the standard port
// is a skip that names the port and says how to enable the test.
func TestURLSkipsWhenThePortIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a port that was just free: nothing answers there
	withService(t, "EVENTSOURCE_TESTENV_CLOSED", "probe://"+addr)
	f := &fakeTB{TB: t}
	URL(f, "EVENTSOURCE_TESTENV_CLOSED", "start it")
	if !f.skipped || len(f.msgs) != 1 || !strings.Contains(f.msgs[0], "nothing answers on "+addr) || !strings.Contains(f.msgs[0], "start it") {
		t.Fatalf("skipped %v with %q", f.skipped, f.msgs)
	}
}

func TestAddress(t *testing.T) {
	for in, want := range map[string]string{
		"redis://127.0.0.1:6379/0":                                "127.0.0.1:6379",
		"amqp://guest:guest@127.0.0.1:5672/":                      "127.0.0.1:5672",
		"127.0.0.1:9092,127.0.0.1:9093":                           "127.0.0.1:9092",
		"postgres://postgres@127.0.0.1:5432/test?sslmode=disable": "127.0.0.1:5432",
	} {
		if got := address(in); got != want {
			t.Errorf("address(%q) = %q, want %q", in, got, want)
		}
	}
}
