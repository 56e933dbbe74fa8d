// Package testenv lets tests find the brokers and databases they run
// against. It is imported only by _test.go files, so it never enters the
// build of a program that uses the framework.
//
// A test asks for a service by its variable (URL). The variable wins when
// it is set; otherwise the service's standard port on 127.0.0.1 is tried
// with a short TCP dial, and its default URL is used when something
// answers there. Otherwise the test skips, saying how to enable it, or
// fails when EVENTSOURCE_REQUIRE_BROKERS=1.
//
// Every resolved service is logged with a line that starts with Marker, so
// that a summary of `go test -json` (internal/cmd/testsummary) can tell
// which tests ran against which service.
package testenv

import (
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireVar is the variable that CI sets to turn every missing-broker skip
// into a failure.
const RequireVar = "EVENTSOURCE_REQUIRE_BROKERS"

// Marker starts the log line of a test that got a service from URL:
// "testenv: using <service> <redacted address> (<source>)".
const Marker = "testenv: using "

// Service is a server the tests can run against.
type Service struct {
	Var     string // the environment variable that names it
	Name    string // for people: "Redis"
	Default string // the URL on its standard loopback port
}

// Services are the servers the tests know, by variable.
var Services = map[string]Service{
	"EVENTSOURCE_REDIS_URL":     {"EVENTSOURCE_REDIS_URL", "Redis", "redis://127.0.0.1:6379/0"},
	"EVENTSOURCE_AMQP_URL":      {"EVENTSOURCE_AMQP_URL", "RabbitMQ", "amqp://guest:guest@127.0.0.1:5672/"},
	"EVENTSOURCE_KAFKA_BROKERS": {"EVENTSOURCE_KAFKA_BROKERS", "Kafka", "127.0.0.1:9092"},
	"EVENTSOURCE_POSTGRES_URL":  {"EVENTSOURCE_POSTGRES_URL", "PostgreSQL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
}

// dialTimeout bounds the probe of a loopback port: something listening
// there answers within microseconds.
const dialTimeout = 300 * time.Millisecond

var probes sync.Map // address -> *probe

type probe struct {
	once sync.Once
	err  error
}

// answers reports whether something accepts TCP connections at addr,
// asking once per test binary.
func answers(addr string) error {
	p, _ := probes.LoadOrStore(addr, &probe{})
	pr := p.(*probe)
	pr.once.Do(func() {
		c, err := net.DialTimeout("tcp", addr, dialTimeout)
		if err == nil {
			_ = c.Close()
		}
		pr.err = err
	})
	return pr.err
}

// address is the host:port a service URL (or broker list) points at.
func address(raw string) string {
	first, _, _ := strings.Cut(raw, ",")
	if !strings.Contains(first, "://") {
		return first
	}
	u, err := url.Parse(first)
	if err != nil {
		return ""
	}
	return u.Host
}

// Lookup returns the value for the variable name: the variable when set
// (source "name"), else the service's default URL when its loopback port
// answers (source "default, answered on 127.0.0.1:port"). When neither,
// ok is false and why says what was tried.
func Lookup(name string) (value, source string, ok bool, why string) {
	if v := os.Getenv(name); v != "" {
		return v, name, true, ""
	}
	svc, known := Services[name]
	if !known {
		return "", "", false, name + " is not set"
	}
	addr := address(svc.Default)
	if err := answers(addr); err != nil {
		return "", "", false, name + " is not set and nothing answers on " + addr
	}
	return svc.Default, "default, answered on " + addr, true, ""
}

// URL returns the value for the variable name (see Lookup). When there is
// none the test is skipped with howTo (how to enable it), or fails instead
// if EVENTSOURCE_REQUIRE_BROKERS=1 is set.
func URL(t testing.TB, name, howTo string) string {
	t.Helper()
	v, source, ok, why := Lookup(name)
	if ok {
		label := name
		if svc, known := Services[name]; known {
			label = svc.Name
		}
		t.Logf("%s%s %s (%s)", Marker, label, redactedAddress(v), source)
		return v
	}
	msg := why + "; " + howTo
	if os.Getenv(RequireVar) == "1" {
		t.Fatalf("%s (%s=1 requires it)", msg, RequireVar)
	}
	t.Skip(msg)
	return ""
}

// redactedAddress is v without a password.
func redactedAddress(v string) string {
	if !strings.Contains(v, "://") {
		return v
	}
	u, err := url.Parse(v)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}
