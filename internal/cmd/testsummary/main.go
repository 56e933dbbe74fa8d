// Command testsummary reads `go test -json` on its standard input, prints
// what `go test` would (package results, and the output of failed tests),
// then says what the run covered: how many tests ran against each server
// (as internal/testenv logged it), how many needed none, and how many
// skipped, grouped by the reason they gave. Its last line is
//
//	tests: N passed, N failed, N skipped
//
// It exits 1 when a test or a package failed, a package did not build, or
// no test ran.
//
//	go test -race -count=1 ./... ./integration/... ./bench/... -json | go run ./internal/cmd/testsummary
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
)

func main() {
	os.Exit(summarize(os.Stdin, os.Stdout))
}

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action     string
	Package    string
	ImportPath string
	Test       string
	Output     string
}

type testKey struct{ pkg, name string }

type run struct {
	results    map[testKey]string              // pass, fail or skip
	output     map[testKey][]string            // what each test printed
	services   map[testKey]map[string]struct{} // servers each test logged
	addresses  map[string]map[string]struct{}  // service -> addresses
	failedPkgs []string
	buildFail  bool
	order      []testKey
}

// The marker internal/testenv logs; kept in step with testenv.Marker
// (this command does not import test-only code).
const marker = "testenv: using "

var (
	logPrefix = regexp.MustCompile(`^\s+\S+\.go:\d+: `)
	markerRe  = regexp.MustCompile(regexp.QuoteMeta(marker) + `(\S+) (\S+)`)
)

func summarize(in io.Reader, out io.Writer) int {
	r := &run{
		results:   map[testKey]string{},
		output:    map[testKey][]string{},
		services:  map[testKey]map[string]struct{}{},
		addresses: map[string]map[string]struct{}{},
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1024*1024), 64*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not JSON: go test's own message (a build error, a bad flag).
			fmt.Fprintln(out, string(line))
			continue
		}
		r.add(out, e)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(out, "testsummary: reading go test -json:", err)
		return 1
	}
	return r.report(out)
}

func (r *run) add(out io.Writer, e event) {
	switch e.Action {
	case "build-output":
		fmt.Fprint(out, e.Output)
		return
	case "build-fail":
		r.buildFail = true
		return
	}
	if e.Test == "" {
		switch e.Action {
		case "output":
			// The package's own lines: ok, FAIL, "no test files", panics.
			if e.Output != "PASS\n" && e.Output != "FAIL\n" && !strings.HasPrefix(e.Output, "testing: warning: no tests to run") {
				fmt.Fprint(out, e.Output)
			}
		case "fail":
			r.failedPkgs = append(r.failedPkgs, e.Package)
		}
		return
	}
	k := testKey{e.Package, e.Test}
	switch e.Action {
	case "output":
		r.output[k] = append(r.output[k], e.Output)
		if m := markerRe.FindStringSubmatch(e.Output); m != nil {
			if r.services[k] == nil {
				r.services[k] = map[string]struct{}{}
			}
			r.services[k][m[1]] = struct{}{}
			if r.addresses[m[1]] == nil {
				r.addresses[m[1]] = map[string]struct{}{}
			}
			r.addresses[m[1]][m[2]] = struct{}{}
		}
	case "pass", "fail", "skip":
		if _, seen := r.results[k]; !seen {
			r.order = append(r.order, k)
		}
		r.results[k] = e.Action
		if e.Action == "fail" {
			fmt.Fprintf(out, "--- FAIL: %s (%s)\n", e.Test, e.Package)
			for _, l := range r.output[k] {
				fmt.Fprint(out, l)
			}
		}
	}
}

// related reports whether a and b are the same test or one contains the
// other (subtests are named parent/child).
func related(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// skipReason is the message a skipped test gave: its last logged line,
// less the file:line prefix.
func (r *run) skipReason(k testKey) string {
	reason := ""
	for _, l := range r.output[k] {
		if logPrefix.MatchString(l) && !strings.Contains(l, marker) {
			reason = strings.TrimSpace(logPrefix.ReplaceAllString(l, ""))
		}
	}
	if reason == "" {
		return "(no reason given)"
	}
	return reason
}

func (r *run) report(out io.Writer) int {
	var passed, failed, skipped int
	perService := map[string]int{}
	noServer := 0
	reasons := map[string]int{}
	for _, k := range r.order {
		switch r.results[k] {
		case "pass":
			passed++
			used := map[string]struct{}{}
			for k2, svcs := range r.services {
				if k2.pkg == k.pkg && related(k.name, k2.name) {
					for s := range svcs {
						used[s] = struct{}{}
					}
				}
			}
			for s := range used {
				perService[s]++
			}
			if len(used) == 0 {
				noServer++
			}
		case "fail":
			failed++
		case "skip":
			skipped++
			reasons[r.skipReason(k)]++
		}
	}

	fmt.Fprintln(out)
	fmt.Fprintln(out, "summary (tests and subtests, examples included):")
	var names []string
	for s := range perService {
		names = append(names, s)
	}
	sort.Strings(names)
	if len(names) == 0 {
		fmt.Fprintln(out, "  ran against no server: no test found Redis, RabbitMQ, Kafka or PostgreSQL")
	}
	for _, s := range names {
		var addrs []string
		for a := range r.addresses[s] {
			addrs = append(addrs, a)
		}
		sort.Strings(addrs)
		fmt.Fprintf(out, "  %5d passed against %s (%s)\n", perService[s], s, strings.Join(addrs, ", "))
	}
	fmt.Fprintf(out, "  %5d passed needing no server\n", noServer)
	if skipped > 0 {
		fmt.Fprintf(out, "  %5d skipped:\n", skipped)
		var rs []string
		for reason := range reasons {
			rs = append(rs, reason)
		}
		slices.SortFunc(rs, func(a, b string) int {
			if reasons[a] != reasons[b] {
				return reasons[b] - reasons[a]
			}
			return strings.Compare(a, b)
		})
		for _, reason := range rs {
			fmt.Fprintf(out, "        %4d  %s\n", reasons[reason], reason)
		}
	}
	if len(r.failedPkgs) > 0 {
		fmt.Fprintf(out, "  failed packages: %s\n", strings.Join(r.failedPkgs, ", "))
	}
	if r.buildFail {
		fmt.Fprintln(out, "  some packages did not build (see above)")
	}
	fmt.Fprintf(out, "tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || len(r.failedPkgs) > 0 || r.buildFail || passed == 0 {
		return 1
	}
	return 0
}
