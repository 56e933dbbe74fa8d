package main

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `{"Action":"start","Package":"p/redis"}
{"Action":"run","Package":"p/redis","Test":"TestBus"}
{"Action":"output","Package":"p/redis","Test":"TestBus","Output":"=== RUN   TestBus\n"}
{"Action":"run","Package":"p/redis","Test":"TestBus/fanout"}
{"Action":"output","Package":"p/redis","Test":"TestBus/fanout","Output":"    testenv.go:1: testenv: using Redis redis://127.0.0.1:6379/0 (default, answered on 127.0.0.1:6379)\n"}
{"Action":"pass","Package":"p/redis","Test":"TestBus/fanout"}
{"Action":"pass","Package":"p/redis","Test":"TestBus"}
{"Action":"run","Package":"p/redis","Test":"TestPure"}
{"Action":"pass","Package":"p/redis","Test":"TestPure"}
{"Action":"output","Package":"p/redis","Output":"PASS\n"}
{"Action":"output","Package":"p/redis","Output":"ok  \tp/redis\t0.1s\n"}
{"Action":"pass","Package":"p/redis"}
{"Action":"run","Package":"p/pg","Test":"TestStore"}
{"Action":"output","Package":"p/pg","Test":"TestStore","Output":"    pg_test.go:31: EVENTSOURCE_POSTGRES_URL is not set and nothing answers on 127.0.0.1:5432; start it\n"}
{"Action":"output","Package":"p/pg","Test":"TestStore","Output":"--- SKIP: TestStore (0.00s)\n"}
{"Action":"skip","Package":"p/pg","Test":"TestStore"}
{"Action":"run","Package":"p/pg","Test":"TestOther"}
{"Action":"output","Package":"p/pg","Test":"TestOther","Output":"    pg_test.go:31: EVENTSOURCE_POSTGRES_URL is not set and nothing answers on 127.0.0.1:5432; start it\n"}
{"Action":"skip","Package":"p/pg","Test":"TestOther"}
{"Action":"output","Package":"p/pg","Output":"ok  \tp/pg\t0.1s\n"}
{"Action":"pass","Package":"p/pg"}
`

func TestSummaryCountsServicesAndSkips(t *testing.T) {
	var out bytes.Buffer
	if code := summarize(strings.NewReader(sample), &out); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	s := out.String()
	for _, want := range []string{
		"ok  \tp/redis\t0.1s\n",
		"    2 passed against Redis (redis://127.0.0.1:6379/0)\n", // the test and its subtest
		"    1 passed needing no server\n",
		"   2  EVENTSOURCE_POSTGRES_URL is not set and nothing answers on 127.0.0.1:5432; start it\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	if !strings.HasSuffix(s, "\ntests: 3 passed, 0 failed, 2 skipped\n") {
		t.Errorf("the last line is not the totals:\n%s", s)
	}
}

func TestSummaryFails(t *testing.T) {
	for name, in := range map[string]string{
		"a failed test": `{"Action":"run","Package":"p","Test":"TestX"}
{"Action":"output","Package":"p","Test":"TestX","Output":"    x_test.go:3: boom\n"}
{"Action":"fail","Package":"p","Test":"TestX"}
{"Action":"fail","Package":"p"}
`,
		"a build failure": `{"ImportPath":"p","Action":"build-output","Output":"p/x.go:1: syntax error\n"}
{"ImportPath":"p","Action":"build-fail"}
{"Action":"run","Package":"q","Test":"TestY"}
{"Action":"pass","Package":"q","Test":"TestY"}
`,
		"no test": `{"Action":"output","Package":"p","Output":"?   \tp\t[no test files]\n"}
`,
	} {
		var out bytes.Buffer
		if code := summarize(strings.NewReader(in), &out); code != 1 {
			t.Errorf("%s: exit %d, want 1:\n%s", name, code, out.String())
		}
		if name == "a failed test" && !strings.Contains(out.String(), "boom") {
			t.Errorf("the failed test's output is not shown:\n%s", out.String())
		}
	}
}
