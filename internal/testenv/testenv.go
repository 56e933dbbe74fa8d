// Package testenv lets tests find the brokers and databases they run
// against. It is imported only by _test.go files, so it never enters the
// build of a program that uses the framework.
package testenv

import (
	"os"
	"testing"
)

// RequireVar is the variable that CI sets to turn every missing-broker skip
// into a failure.
const RequireVar = "EVENTSOURCE_REQUIRE_BROKERS"

// URL returns the value of the environment variable name. When it is empty
// the test is skipped with howTo (how to enable it), or fails instead if
// EVENTSOURCE_REQUIRE_BROKERS=1 is set.
func URL(t testing.TB, name, howTo string) string {
	t.Helper()
	if v := os.Getenv(name); v != "" {
		return v
	}
	msg := name + " is not set; " + howTo
	if os.Getenv(RequireVar) == "1" {
		t.Fatalf("%s (%s=1 requires it)", msg, RequireVar)
	}
	t.Skip(msg)
	return ""
}
