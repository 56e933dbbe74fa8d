package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/projection"
)

// counter is a projection that counts invoices.
type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) EventTypes() []string { return []string{invoiceIssued{}.EventType()} }
func (c *counter) Handle(_ context.Context, _ eventsource.Envelope) error {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return nil
}

type storeUnderTest interface {
	eventstore.Store
	eventstore.CheckpointStore
}

// appendInvoices stores n invoices, one stream each: Invoice-inv-1, ...
func appendInvoices(t *testing.T, s eventstore.Store, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 1; i <= n; i++ {
		env := envelope(fmt.Sprintf("inv-%d", i))
		if _, err := s.Append(ctx, eventsource.StreamID("Invoice", env.AggregateID), 0, []eventsource.Envelope{env}); err != nil {
			t.Fatal(err)
		}
	}
}

func storeCases(t *testing.T) map[string]func(t *testing.T) (storeUnderTest, []string) {
	return map[string]func(t *testing.T) (storeUnderTest, []string){
		"sqlite": func(t *testing.T) (storeUnderTest, []string) {
			path := filepath.Join(t.TempDir(), "events.db")
			s, err := sqlite.Open(context.Background(), path, sqlite.WithRegistry(registry()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s, []string{"-sqlite-path", path, "-postgres-url", ""}
		},
		"postgres": func(t *testing.T) (storeUnderTest, []string) {
			raw := testenv.URL(t, "EVENTSOURCE_POSTGRES_URL", "set EVENTSOURCE_POSTGRES_URL or run PostgreSQL on :5432")
			ctx := context.Background()
			schema := testenv.PostgresSchema(t, raw, "esctl_")
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			q.Set("search_path", schema)
			u.RawQuery = q.Encode()
			pool, err := pgxpool.New(ctx, u.String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			if err := postgres.Migrate(ctx, pool); err != nil {
				t.Fatal(err)
			}
			return postgres.New(pool, registry()), []string{"-postgres-url", u.String(), "-sqlite-path", ""}
		},
	}
}

// TestStoreAndProjections: the global order, a stream, the counts, and a
// projection's checkpoint (status with lag, reset, rebuild followed to the
// head while a real Runner works), on SQLite and PostgreSQL.
func TestStoreAndProjections(t *testing.T) {
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			s, flags := storeCases(t)[name](t)
			cli := func(args ...string) []string { return append(args, flags...) }
			appendInvoices(t, s, 5)

			var evs []rawEvent
			if err := json.Unmarshal([]byte(mustRun(t, cli("store", "read", "-from", "2", "-limit", "3", "-o", "json")...)), &evs); err != nil {
				t.Fatal(err)
			}
			if len(evs) != 3 || evs[0].Position != 2 || evs[2].Position != 4 || evs[0].Type != "EsctlInvoiceIssued" || !strings.Contains(compact(evs[0].Data), `"Cents":4200`) {
				t.Fatalf("store read -from 2 -limit 3: %+v", evs)
			}
			if err := json.Unmarshal([]byte(mustRun(t, cli("store", "load", "Invoice-inv-4", "-o", "json")...)), &evs); err != nil || len(evs) != 1 || evs[0].AggregateID != "inv-4" {
				t.Fatalf("store load: %+v (%v)", evs, err)
			}
			var c storeCounts
			if err := json.Unmarshal([]byte(mustRun(t, cli("store", "count", "-o", "json")...)), &c); err != nil || c.Events != 5 || c.Streams != 5 || c.Head != 5 || c.ByType["EsctlInvoiceIssued"] != 5 {
				t.Fatalf("store count: %+v (%v)", c, err)
			}
			if out := mustRun(t, cli("store", "read")...); strings.Count(out, "EsctlInvoiceIssued") != 5 {
				t.Errorf("store read table:\n%s", out)
			}

			// A projection caught up to 3: lag 2.
			ctx := context.Background()
			if err := s.SaveCheckpoint(ctx, "invoice-count", 3); err != nil {
				t.Fatal(err)
			}
			var rows []followerRow
			if err := json.Unmarshal([]byte(mustRun(t, cli("status", "-o", "json")...)), &rows); err != nil || len(rows) != 1 {
				t.Fatalf("status: %+v (%v)", rows, err)
			}
			if r := rows[0]; r.Name != "invoice-count" || r.Position != 3 || r.Head != 5 || r.Lag != 2 || r.State != "behind" {
				t.Errorf("status: %+v", r)
			}
			if out := mustRun(t, cli("status")...); !strings.Contains(out, "LAG") || !strings.Contains(out, "invoice-count") {
				t.Errorf("status table:\n%s", out)
			}

			// reset: the checkpoint goes to 0; a typo is an error, not a new checkpoint
			mustRun(t, cli("projection", "reset", "invoice-count")...)
			if p, _ := s.Checkpoint(ctx, "invoice-count"); p != 0 {
				t.Errorf("after reset: checkpoint %d", p)
			}
			if _, errOut, code := runCLI(t, cli("projection", "reset", "invoice-cuont")...); code != exitFailure || !strings.Contains(errOut, "no checkpoint") {
				t.Errorf("reset of an unknown name: exit %d %s", code, errOut)
			}

			// rebuild: reset, then follow a running projection to the head
			proj := &counter{}
			runner := projection.NewRunner("invoice-count", proj, s, s)
			rctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- runner.Run(rctx, 20*time.Millisecond) }()
			t.Cleanup(func() { stop(); <-done })
			waitFor(t, "projection caught up", func() bool { return runner.Status().Position == 5 })
			out := mustRun(t, cli("projection", "rebuild", "invoice-count", "-o", "json")...)
			if !strings.Contains(out, `"position": 5`) {
				t.Errorf("rebuild: %s", out)
			}
			proj.mu.Lock()
			n := proj.n
			proj.mu.Unlock()
			if n != 10 { // 5 at first, 5 again after the rebuild
				t.Errorf("projection applied %d events, want 10", n)
			}
		})
	}
}

// TestTail: a tail sees the events published while it runs, filtered by
// aggregate, as JSON lines, on every broker, and creates no group.
func TestTail(t *testing.T) {
	for _, name := range []string{"redis", "rabbitmq", "kafka"} {
		t.Run(name, func(t *testing.T) {
			f := fixtures[name](t)
			f.failing.Store(false)
			var out, errb testenv.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			code := make(chan int, 1)
			args := append([]string{"tail", "-aggregate", "inv-b", "-n", "1", "-o", "json"}, f.flags...)
			go func() { code <- run(ctx, args, &out, &errb) }()
			waitFor(t, "the tail to listen", func() bool {
				if strings.Contains(errb.String(), "esctl tail:") {
					t.Fatalf("tail failed: %s", errb.String())
				}
				return strings.Contains(errb.String(), "tailing")
			})
			if err := f.publish(ctx, envelope("inv-a"), envelope("inv-b")); err != nil {
				t.Fatal(err)
			}
			select {
			case c := <-code:
				if c != exitOK {
					t.Fatalf("tail: exit %d: %s", c, errb.String())
				}
			case <-ctx.Done():
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("tail did not stop after one event; stdout %q; stderr %q\n%s", out.String(), errb.String(), buf)
			}
			var ev rawEvent
			if err := json.Unmarshal(bytes.TrimSpace([]byte(out.String())), &ev); err != nil {
				t.Fatalf("tail output %q: %v", out.String(), err)
			}
			if ev.AggregateID != "inv-b" || ev.Type != "EsctlInvoiceIssued" || !strings.Contains(compact(ev.Data), "ada@example.com") {
				t.Errorf("tail: %+v", ev)
			}
			// The tail took nothing from the group: its handler got both.
			waitFor(t, "the group handled both", func() bool { return f.handledCount("inv-a") == 1 && f.handledCount("inv-b") == 1 })
		})
	}
}

// TestSecretsAndExitCodes: a password never reaches the output, even in
// an error, and usage mistakes exit 2.
func TestSecretsAndExitCodes(t *testing.T) {
	out, errOut, code := runCLI(t, "dlq", "list", "-bus", "redis", "-redis-url", "redis://:hunter2secret@127.0.0.1:1/0", "-timeout", "2s")
	if code != exitFailure {
		t.Errorf("unreachable redis: exit %d, want 1", code)
	}
	if strings.Contains(out+errOut, "hunter2secret") {
		t.Errorf("the password leaked: %s%s", out, errOut)
	}
	out, errOut, _ = runCLI(t, "store", "count", "-postgres-url", "postgres://u:pg-secret-pw@127.0.0.1:1/x?connect_timeout=2", "-sqlite-path", "")
	if strings.Contains(out+errOut, "pg-secret-pw") {
		t.Errorf("the password leaked: %s%s", out, errOut)
	}
	for _, args := range [][]string{{}, {"nosuch"}, {"dlq", "list", "-o", "yaml"}, {"dlq", "list", "-bus", "nats"}, {"store", "load"}} {
		if _, _, code := runCLI(t, args...); code != exitUsage {
			t.Errorf("esctl %v: exit %d, want 2", args, code)
		}
	}
	if _, _, code := runCLI(t, "dlq", "list", "-h"); code != exitOK {
		t.Errorf("-h: exit %d, want 0", code)
	}
}
