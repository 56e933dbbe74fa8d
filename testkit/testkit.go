package testkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
)

// RequireVar is the variable that turns every skip for a missing server
// into a failure, as CI sets it: EVENTSOURCE_REQUIRE_BROKERS=1.
const RequireVar = "EVENTSOURCE_REQUIRE_BROKERS"

// ErrUnavailable is what Start's error matches when the server's variable
// is not set and no Docker engine answers.
var ErrUnavailable = errors.New("testkit: server unavailable")

// Server names a kind of server testkit provides.
type Server string

// The servers testkit provides.
const (
	ServerRedis    Server = "Redis"
	ServerRabbitMQ Server = "RabbitMQ"
	ServerKafka    Server = "Kafka"
	ServerPostgres Server = "PostgreSQL"
)

// Service is a server ready to use.
type Service struct {
	Server Server
	// URL is how to reach it: redis://…, amqp://…, postgres://…, or for
	// Kafka the brokers' host:port addresses joined by commas.
	URL string
	// Source says where it came from: the variable that named it, or the
	// container started for it ("container IMAGE ID").
	Source string
}

// Brokers is a Kafka service's URL as a list of host:port addresses.
func (s Service) Brokers() []string { return strings.Split(s.URL, ",") }

// Address is the service's host:port (the first broker for Kafka).
func (s Service) Address() string {
	first, _, _ := strings.Cut(s.URL, ",")
	if u, err := url.Parse(first); err == nil && u.Host != "" {
		return u.Host
	}
	return first
}

// Redacted is the URL without its password, for logs.
func (s Service) Redacted() string {
	if !strings.Contains(s.URL, "://") {
		return s.URL
	}
	if u, err := url.Parse(s.URL); err == nil {
		return u.Redacted()
	}
	return "<unparsable URL>"
}

// Option changes how a server is started when testkit starts a container.
type Option func(*options)

type options struct {
	image     string
	timeout   time.Duration
	dedicated bool
}

// WithImage starts the container from image instead of the default (or the
// image in the server's EVENTSOURCE_*_IMAGE variable).
func WithImage(image string) Option { return func(o *options) { o.image = image } }

// WithStartTimeout bounds how long starting a container and waiting for the
// server to answer may take; default 3 minutes (an image pull included).
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// Dedicated gives the test a container of its own, removed when the test
// ends, instead of the one the test binary's tests share. It makes no
// difference when the server's variable is set.
func Dedicated() Option { return func(o *options) { o.dedicated = true } }

func apply(opts []Option) options {
	o := options{timeout: 3 * time.Minute}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Instance is a service obtained without a test (see Start). Close removes
// its container, if testkit started one.
type Instance struct {
	Service
	ctr testcontainers.Container
}

// Close removes the instance's container; it does nothing for a service
// named by its variable.
func (i *Instance) Close() error {
	if i == nil || i.ctr == nil {
		return nil
	}
	return testcontainers.TerminateContainer(i.ctr)
}

// Logs is the container's output so far (empty for a service named by its
// variable), for a failing test's message.
func (i *Instance) Logs(ctx context.Context) string {
	if i == nil || i.ctr == nil {
		return ""
	}
	return containerLogs(ctx, i.ctr)
}

// Start returns server outside a test: from its variable when set (Close
// then does nothing), else in a new container that the caller removes with
// Close. When neither is possible the error matches ErrUnavailable and
// says how to enable the server. The tests' functions (Redis, RedisBus, …)
// are built on it.
func Start(ctx context.Context, server Server, opts ...Option) (*Instance, error) {
	k, ok := kinds[server]
	if !ok {
		return nil, fmt.Errorf("testkit: unknown server %q", server)
	}
	if v := os.Getenv(k.urlVar); v != "" {
		return &Instance{Service: Service{Server: server, URL: v, Source: k.urlVar}}, nil
	}
	return startContainer(ctx, k, apply(opts))
}

// shared holds the containers the tests of one test binary share, by
// server and image, until Terminate.
var shared struct {
	mu sync.Mutex
	m  map[string]*sharedEntry
}

type sharedEntry struct {
	once sync.Once
	inst *Instance
	err  error
}

// service is what every test function does first: the server's variable,
// else a container (shared or dedicated), else skip or fail.
func service(t testing.TB, server Server, opts []Option) Service {
	t.Helper()
	k := kinds[server]
	o := apply(opts)
	if v := os.Getenv(k.urlVar); v != "" {
		s := Service{Server: server, URL: v, Source: k.urlVar}
		t.Logf("testkit: %s at %s (%s)", server, s.Redacted(), s.Source)
		return s
	}
	var (
		inst *Instance
		err  error
	)
	if o.dedicated {
		ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
		defer cancel()
		inst, err = startContainer(ctx, k, o)
		if err == nil {
			t.Cleanup(func() {
				if err := inst.Close(); err != nil {
					t.Errorf("testkit: removing the %s container: %v", server, err)
				}
			})
		}
	} else {
		key := string(server) + "\x00" + k.imageFor(o)
		shared.mu.Lock()
		if shared.m == nil {
			shared.m = map[string]*sharedEntry{}
		}
		e := shared.m[key]
		if e == nil {
			e = &sharedEntry{}
			shared.m[key] = e
		}
		shared.mu.Unlock()
		e.once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
			defer cancel()
			e.inst, e.err = startContainer(ctx, k, o)
		})
		inst, err = e.inst, e.err
	}
	if err != nil {
		unavailable(t, err.Error())
	}
	t.Logf("testkit: %s at %s (%s)", server, inst.Redacted(), inst.Source)
	return inst.Service
}

// unavailable skips, or fails under EVENTSOURCE_REQUIRE_BROKERS=1.
func unavailable(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv(RequireVar) == "1" {
		t.Fatalf("%s (%s=1 requires it)", msg, RequireVar)
	}
	t.Skip(msg)
}

// Terminate removes the containers the tests shared. Call it from TestMain
// after m.Run (or use Run), so that no container outlives the test binary
// when the reaper (Ryuk) is disabled; with it enabled it removes them
// anyway when the binary exits.
func Terminate() error {
	shared.mu.Lock()
	m := shared.m
	shared.m = nil
	shared.mu.Unlock()
	var errs []error
	for _, e := range m {
		e.once.Do(func() {}) // a start in progress finishes first
		if err := e.inst.Close(); err != nil {
			errs = append(errs, fmt.Errorf("testkit: removing the %s container: %w", e.inst.Server, err))
		}
	}
	return errors.Join(errs...)
}

// Run runs the tests, then Terminate, and returns the exit code:
//
//	func TestMain(m *testing.M) { os.Exit(testkit.Run(m)) }
func Run(m *testing.M) int {
	code := m.Run()
	if err := Terminate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// containerLogs is the last lines of a container's output.
func containerLogs(ctx context.Context, ctr testcontainers.Container) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := ctr.Logs(ctx)
	if err != nil {
		return "(no logs: " + err.Error() + ")"
	}
	defer r.Close()
	b, _ := io.ReadAll(io.LimitReader(r, 1<<20))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// Unavailable says why server cannot be had, without starting anything: ""
// when its variable is set or a Docker engine answers (a container may
// still fail to start), else the reason and how to enable it.
func Unavailable(server Server) string {
	k, ok := kinds[server]
	if !ok {
		return fmt.Sprintf("unknown server %q", server)
	}
	if os.Getenv(k.urlVar) != "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := dockerPing(ctx); err != nil {
		return fmt.Sprintf("%s is not set and no Docker engine answered (%v); %s", k.urlVar, err, k.howTo())
	}
	return ""
}
