package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"image/png"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	redisbus "github.com/eventsource-go/eventsource/bus/redis"
	"github.com/eventsource-go/eventsource/eventstore/sqlite"
	"github.com/eventsource-go/eventsource/projection"
)

type consoleInvoice struct {
	Customer string
	Cents    int64
}

func (consoleInvoice) EventType() string { return "InvoiceIssued" }

type invoiceTotals struct{ n atomic.Int64 }

func (p *invoiceTotals) EventTypes() []string { return []string{"InvoiceIssued"} }
func (p *invoiceTotals) Handle(context.Context, eventsource.Envelope) error {
	p.n.Add(1)
	return nil
}

// chromiumPath finds Debian's chromium; without it the test skips, or
// fails when the brokers are required.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no chromium on PATH; apt-get install -y chromium to run the console's browser test"
	if os.Getenv("EVENTSOURCE_REQUIRE_BROKERS") == "1" {
		t.Fatal(msg + " (EVENTSOURCE_REQUIRE_BROKERS=1 requires it)")
	}
	t.Skip(msg)
	return ""
}

// buildEsctl builds the operator CLI into dir.
func buildEsctl(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "esctl")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/eventsource-go/eventsource/cmd/esctl")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build esctl: %v\n%s", err, out)
	}
	return bin
}

// startConsole runs `esctl console` on a free loopback port and returns
// its URL once it listens.
func startConsole(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, append([]string{"console", "-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = os.Environ()
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	urls := make(chan string, 1)
	var logMu sync.Mutex
	var logs strings.Builder
	go func() {
		re := regexp.MustCompile(`console on (http://\S+/)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			logs.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
		}
	}()
	select {
	case u := <-urls:
		return u
	case <-time.After(30 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("the console did not start:\n%s", logs.String())
		return ""
	}
}

// TestConsoleInBrowser drives the console in headless Chromium as an
// operator would: the page shows the dead letters a failing handler left,
// the bus figures, a projection's lag and the live tail; "replay all"
// empties the dead letters and the fixed handler runs; the lag figure
// follows the projection. A screenshot is checked (and written to
// docs/console.png with EVENTSOURCE_UPDATE_SCREENSHOT=1).
func TestConsoleInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	url := redisURL(t)
	dir := t.TempDir()
	bin := buildEsctl(t, dir)

	// A Redis bus whose billing handler fails for good until fixed.
	prefix := uniquePrefix(t)
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	raw := goredis.NewClient(opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := redisbus.DeleteKeys(ctx, raw, prefix); err != nil {
			t.Errorf("deleting keys of %s: %v", prefix, err)
		}
		_ = raw.Close()
	})
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[consoleInvoice](reg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := redisbus.New(ctx, redisbus.Config{URL: url, Registry: reg, StreamPrefix: prefix, Group: "billing",
		Block: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler), KeepGoRedisLogger: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBus(t, b) })
	var failing atomic.Bool
	var handled atomic.Int64
	failing.Store(true)
	if _, err := b.Subscribe("InvoiceIssued", bus.HandlerFunc(func(_ context.Context, env eventsource.Envelope) error {
		if failing.Load() {
			return bus.Permanent(errors.New("smtp 550: mailbox unavailable for " + env.AggregateID))
		}
		handled.Add(1)
		return nil
	}), bus.WithName("invoice-mailer")); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// A store with a projection two events behind.
	dbPath := filepath.Join(dir, "events.db")
	store, err := sqlite.Open(ctx, dbPath, sqlite.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	var envs []eventsource.Envelope
	for _, id := range []string{"INV-1001", "INV-1002", "INV-1003"} {
		env := eventsource.NewEnvelope(consoleInvoice{Customer: "ada@example.com", Cents: 129900})
		env.AggregateType, env.AggregateID, env.Version = "Invoice", id, 1
		stored, err := store.Append(ctx, eventsource.StreamID("Invoice", id), 0, []eventsource.Envelope{env})
		if err != nil {
			t.Fatal(err)
		}
		envs = append(envs, stored...)
	}
	if err := store.SaveCheckpoint(ctx, "invoice-totals", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, envs[:2]...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "two dead letters", func() bool {
		n, err := b.DeadLetters().Count(ctx)
		return err == nil && n == 2
	})

	site := startConsole(t, bin, "-bus", "redis", "-redis-url", url, "-prefix", prefix, "-group", "billing", "-sqlite-path", dbPath)

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()

	count := func(sel string) int {
		n, err := chromedp.Run(browser, chromedp.Evaluate[int](`document.querySelectorAll(`+jsString(sel)+`).length`))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	text := func(sel string) string {
		s, err := chromedp.Run(browser, chromedp.Evaluate[string](`(document.querySelector(`+jsString(sel)+`)||{}).textContent||""`))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// The page loads and shows what is there.
	if err := chromedp.Do(browser, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(site),
		chromedp.WaitVisible(chromedp.CSS(`body[data-loaded="true"]`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "two dead letters on the page", func() bool { return count(`table.dlq[data-group="billing"] tr[data-id]`) == 2 })
	if got := text(`table.dlq[data-group="billing"]`); !strings.Contains(got, "mailbox unavailable") || !strings.Contains(got, "invoice-mailer") {
		t.Errorf("dead-letter table lacks the error or the handler: %q", got)
	}
	waitFor(t, 30*time.Second, "the projection's lag of 2", func() bool { return text(`#followers tr[data-name="invoice-totals"] .lag`) == "2" })
	if got := text(`#groups tr[data-group="billing"]`); !strings.Contains(got, "billing") {
		t.Errorf("bus figures: %q", got)
	}

	// The live tail shows an event published now.
	waitFor(t, 30*time.Second, "the tail to listen", func() bool { return text(`#tail-state`) == "listening" })
	if err := b.Publish(ctx, envs[2]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the event in the tail", func() bool { return strings.Contains(text(`#tail`), "Invoice-INV-1003") })
	waitFor(t, 30*time.Second, "three dead letters on the page", func() bool { return count(`table.dlq[data-group="billing"] tr[data-id]`) == 3 })

	// The screenshot, as the operator sees it.
	shot, err := chromedp.Run(browser, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if sz := img.Bounds().Size(); sz.X != 1280 || sz.Y != 900 {
		t.Errorf("screenshot is %v, want 1280x900", sz)
	}
	if err := os.WriteFile(filepath.Join(t.TempDir(), "console.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("EVENTSOURCE_UPDATE_SCREENSHOT") == "1" {
		if err := os.WriteFile(filepath.Join("..", "docs", "console.png"), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Fix the handler, press "replay all": the dead letters empty and the
	// handler runs for each.
	failing.Store(false)
	if err := chromedp.Do(browser, chromedp.Click(chromedp.CSS(`button[data-action="replay-all"][data-group="billing"]`))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the handler to run for the three replayed events", func() bool { return handled.Load() == 3 })
	waitFor(t, 30*time.Second, "no dead letters on the page", func() bool {
		return count(`table.dlq[data-group="billing"] tr[data-id]`) == 0 && text(`span[data-count="billing"]`) == "0"
	})
	if n, err := b.DeadLetters().Count(ctx); err != nil || n != 0 {
		t.Errorf("dead letters after replay: %d (%v)", n, err)
	}

	// The projection catches up: its lag on the page goes to 0.
	totals := &invoiceTotals{}
	if _, err := projection.NewRunner("invoice-totals", totals, store, store).CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the lag to reach 0", func() bool {
		return text(`#followers tr[data-name="invoice-totals"] .lag`) == "0" && text(`#followers tr[data-name="invoice-totals"] .position`) == "3"
	})
}

func jsString(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }

// TestConsoleRefusesWrites: off loopback the console needs a token, and a
// replay without it (or from another origin) is refused.
func TestConsoleRefusesWrites(t *testing.T) {
	url := redisURL(t)
	bin := buildEsctl(t, t.TempDir())
	out, err := exec.Command(bin, "console", "-listen", "0.0.0.0:0", "-bus", "redis", "-redis-url", url).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "token") {
		t.Fatalf("console on 0.0.0.0 without a token: %v %s", err, out)
	}
	site := startConsole(t, bin, "-bus", "redis", "-redis-url", url, "-prefix", uniquePrefix(t), "-group", "billing", "-token", "s3cret-token")
	post := func(token, origin string) int {
		req, _ := http.NewRequest("POST", site+"api/dlq/purge", strings.NewReader(`{"group":"billing"}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("X-Esctl-Token", token)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		return res.StatusCode
	}
	if c := post("", ""); c != 401 {
		t.Errorf("POST without the token: %d, want 401", c)
	}
	if c := post("wrong", ""); c != 401 {
		t.Errorf("POST with a wrong token: %d, want 401", c)
	}
	if c := post("s3cret-token", "http://evil.example"); c != 403 {
		t.Errorf("cross-origin POST: %d, want 403", c)
	}
	if c := post("s3cret-token", ""); c != 200 {
		t.Errorf("POST with the token: %d, want 200", c)
	}
}
