package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	got := URL("amqp://guest:s3cret@127.0.0.1:5672/vhost")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "guest:xxxxx@127.0.0.1:5672") {
		t.Errorf("URL = %q", got)
	}
	if got := URL("redis://:s3cret@host:6379/0"); strings.Contains(got, "s3cret") {
		t.Errorf("URL without a user = %q", got)
	}
	if got := URL("redis://user:pa ss%zz@host"); strings.Contains(got, "pa ss") {
		t.Errorf("unparsable URL echoed: %q", got)
	}
}
