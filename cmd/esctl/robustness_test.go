package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Usage text lists each flag's default, and the defaults of the URL and
// token flags come from the environment: -h and a mistyped flag must not
// print the password or the token they hold.
func TestUsageRedactsSecretsFromTheEnvironment(t *testing.T) {
	t.Setenv("EVENTSOURCE_AMQP_URL", "amqp://guest:env-amqp-pw@127.0.0.1:1/")
	t.Setenv("EVENTSOURCE_REDIS_URL", "redis://:env-redis-pw@127.0.0.1:1/0")
	t.Setenv("EVENTSOURCE_POSTGRES_URL", "postgres://app:env-pg-pw@127.0.0.1:1/app")
	t.Setenv("EVENTSOURCE_CONSOLE_TOKEN", "env-console-token")
	for _, args := range [][]string{
		{"dlq", "list", "-h"}, {"dlq", "purge", "-no-such-flag"}, {"store", "count", "-h"},
		{"console", "-h"}, {"console", "-listen"},
	} {
		out, errOut, _ := runCLI(t, args...)
		for _, secret := range []string{"env-amqp-pw", "env-redis-pw", "env-pg-pw", "env-console-token"} {
			if strings.Contains(out+errOut, secret) {
				i := strings.Index(out+errOut, secret)
				t.Errorf("esctl %s printed %q: …%s…", strings.Join(args, " "), secret, (out + errOut)[max(i-60, 0):i+len(secret)])
			}
		}
	}
}

// The PostgreSQL driver takes keyword/value connection strings as well as
// URLs; the password of one must not reach an error either.
func TestPostgresKeywordValuePasswordRedacted(t *testing.T) {
	for _, dsn := range []string{
		"host=127.0.0.1 port=1 user=u password=dsn-secret-pw dbname=x connect_timeout=2",
		"host=127.0.0.1 port=1 user=u password='dsn secret pw' dbname=x connect_timeout=2",
	} {
		out, errOut, code := runCLI(t, "store", "count", "-postgres-url", dsn, "-sqlite-path", "")
		if code != exitFailure {
			t.Errorf("unreachable postgres: exit %d, want 1", code)
		}
		if strings.Contains(out+errOut, "dsn-secret-pw") || strings.Contains(out+errOut, "dsn secret pw") {
			t.Errorf("the password leaked: %s%s", out, errOut)
		}
	}
}

// A URL that does not parse still holds a password, and client libraries
// echo it in their errors; so may a Kafka broker address written as a URL.
func TestUnparsableURLPasswordRedacted(t *testing.T) {
	for _, args := range [][]string{
		{"dlq", "list", "-bus", "rabbitmq", "-amqp-url", "amqp://u:pa%zzamqp-secret@127.0.0.1:1/", "-timeout", "2s"},
		{"dlq", "list", "-bus", "redis", "-redis-url", "redis://u:pa%zzredis-secret@127.0.0.1:1/", "-timeout", "2s"},
		{"store", "count", "-sqlite-path", "", "-postgres-url", "postgres://u:pa%zzpg-secret@127.0.0.1:1/x"},
		{"dlq", "list", "-bus", "kafka", "-kafka-brokers", "kafka://u:kafka-secret@127.0.0.1:1", "-timeout", "2s"},
	} {
		out, errOut, code := runCLI(t, args...)
		if code == exitOK {
			t.Errorf("esctl %s: exit 0", strings.Join(args, " "))
		}
		if strings.Contains(out+errOut, "-secret") {
			t.Errorf("esctl %s: the password leaked: %s%s", strings.Join(args, " "), out, errOut)
		}
	}
}

// consoleFor builds a loopback console on the fixture's bus, as cmdConsole
// does, without listening.
func consoleFor(t *testing.T, f *fixture) *console {
	t.Helper()
	e, _ := testEnv(t, f.flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := openBroker(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	return &console{e: e, loopback: true, broker: b}
}

// testEnv is the env a command gets, its flags parsed.
func testEnv(t *testing.T, args ...string) (*env, *strings.Builder) {
	t.Helper()
	var out strings.Builder
	s := &scrubber{}
	e := &env{name: "test", stdout: &scrubWriter{w: &out, s: s}, stderr: &scrubWriter{w: &out, s: s}, secrets: s, log: quiet}
	if _, err := e.parse(e.flagSet(""), args); err != nil {
		t.Fatal(err)
	}
	return e, &out
}

// openBuses is how many buses (connections) the broker holds for groups.
func openBuses(b broker) int {
	switch b := b.(type) {
	case *redisBroker:
		b.buses.mu.Lock()
		defer b.buses.mu.Unlock()
		return len(b.buses.buses)
	case *rabbitBroker:
		b.buses.mu.Lock()
		defer b.buses.mu.Unlock()
		return len(b.buses.buses)
	case *kafkaBroker:
		b.buses.mu.Lock()
		defer b.buses.mu.Unlock()
		return len(b.buses.buses)
	}
	return -1
}

// Any page the operator's browser opens can make it GET the loopback
// console (an <img> needs no CORS and no token). A group name in the path
// must not open a new broker connection per name: that is a connection
// flood against the production broker.
func TestConsoleUnknownGroupOpensNoBus(t *testing.T) {
	for _, name := range []string{"redis", "rabbitmq"} {
		t.Run(name, func(t *testing.T) {
			f := fixtures[name](t)
			c := consoleFor(t, f)
			h := c.handler()
			for i := range 5 {
				req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8080/api/deadletters/"+unique("nosuch")+"/x", nil)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusNotFound {
					t.Errorf("request %d: status %d, want 404: %s", i, rec.Code, rec.Body)
				}
			}
			if n := openBuses(c.broker); n > 1 {
				t.Errorf("%d buses open after 5 requests for unknown groups, want at most 1 (the configured group)", n)
			}
		})
	}
}

// A body with a mistyped key is not a request to purge every record.
func TestConsolePurgeRefusesUnknownFields(t *testing.T) {
	f := redisFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := f.publish(ctx, envelope("inv-1"), envelope("inv-2")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two dead letters", func() bool { return f.count(t) == 2 })
	c := consoleFor(t, f)
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8080/api/dlq/purge",
		strings.NewReader(`{"group": "billing", "dead_letter_id": "1-1"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(tokenHeader, "console")
	rec := httptest.NewRecorder()
	c.handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("purge with an unknown field: status %d, want 400: %s", rec.Code, rec.Body)
	}
	if n := f.count(t); n != 2 {
		t.Errorf("%d dead letters left, want 2: a typo purged them", n)
	}
}

// Redis dead-letter IDs are stream IDs, unique only within one group's
// stream: two groups that dead-letter in the same millisecond hold the
// same ID. Without -group, an ID found in several groups must not act on
// whichever group sorts first.
func TestAmbiguousIDAcrossGroups(t *testing.T) {
	f := redisFixture(t)
	flag := func(name string) string {
		for i, v := range f.flags {
			if v == name {
				return f.flags[i+1]
			}
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts, err := goredis.ParseURL(flag("-redis-url"))
	if err != nil {
		t.Fatal(err)
	}
	raw := goredis.NewClient(opts)
	defer raw.Close()
	prefix := flag("-prefix") // the fixture's cleanup deletes every key of it
	for _, g := range []string{"analytics", "billing"} {
		if err := raw.XAdd(ctx, &goredis.XAddArgs{Stream: "{" + prefix + "}:dlq:" + g, ID: "1700000000000-0", Values: []any{
			"type", "EsctlInvoiceIssued", "agg_id", "inv-" + g, "envelope", `{"type":"EsctlInvoiceIssued"}`, "reason", "permanent",
			"group", g, "time", time.Now().Format(time.RFC3339Nano),
		}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{"-bus", "redis", "-redis-url", flag("-redis-url"), "-prefix", prefix}
	for _, verb := range []string{"show", "purge"} {
		_, errOut, code := runCLI(t, append([]string{"dlq", verb, "1700000000000-0"}, base...)...)
		if code != exitFailure || !strings.Contains(errOut, "-group") {
			t.Errorf("dlq %s of an ID in two groups: exit %d, %s; want 1 and a request for -group", verb, code, errOut)
		}
	}
	for _, g := range []string{"analytics", "billing"} {
		if n, err := raw.XLen(ctx, "{"+prefix+"}:dlq:"+g).Result(); err != nil || n != 1 {
			t.Errorf("group %s: %d dead letters (%v), want 1", g, n, err)
		}
	}
	// With -group the ID is one record.
	mustRun(t, append([]string{"dlq", "purge", "1700000000000-0", "-group", "analytics"}, base...)...)
	if n, err := raw.XLen(ctx, "{"+prefix+"}:dlq:billing").Result(); err != nil || n != 1 {
		t.Errorf("billing: %d dead letters (%v) after purging analytics', want 1", n, err)
	}
}

// Flags put before the command (as other tools take them) make an unknown
// command, which is echoed: its password must not be.
func TestUnknownCommandRedactsURLs(t *testing.T) {
	t.Setenv("EVENTSOURCE_AMQP_URL", "amqp://guest:env-amqp-pw@127.0.0.1:1/")
	for _, args := range [][]string{
		{"-redis-url", "redis://:arg-redis-pw@127.0.0.1:1/0", "dlq", "list"},
		{"-postgres-url=postgres://u:arg-pg-pw@db/x", "status"},
		{"-postgres-url", "host=db password=arg-dsn-pw", "status"},
		{"amqp://guest:env-amqp-pw@127.0.0.1:1/"},
	} {
		out, errOut, code := runCLI(t, args...)
		if code != exitUsage {
			t.Errorf("esctl %s: exit %d, want 2", strings.Join(args, " "), code)
		}
		for _, secret := range []string{"arg-redis-pw", "arg-pg-pw", "arg-dsn-pw", "env-amqp-pw"} {
			if strings.Contains(out+errOut, secret) {
				t.Errorf("esctl %s printed %q: %s", strings.Join(args, " "), secret, strings.SplitN(errOut, "\n", 2)[0])
			}
		}
	}
}
