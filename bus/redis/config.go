package redis

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/internal/redact"
)

// ErrInvalidConfig matches every error Validate returns.
var ErrInvalidConfig = errors.New("redis bus: invalid config")

// Config configures a Bus. Zero fields take the defaults listed.
type Config struct {
	// URL is redis://[user:password@]host:port/db, or rediss:// for TLS.
	// Logs and errors show it with the password redacted.
	URL string
	// Registry decodes the events this bus consumes. Required.
	Registry *eventsource.Registry

	StreamPrefix string // key prefix; default "eventsource"
	Group        string // consumer group; default "default"
	// Consumer names this member in its group; default host-pid-random,
	// unique per process. A stable name lets a restarted process see its
	// own pending entries at once instead of after ClaimIdle; it must name
	// one process at a time, or the second to start runs the first's too.
	Consumer string

	ReadCount     int           // entries per XREADGROUP; default 512
	Block         time.Duration // XREADGROUP BLOCK; default 2s
	ClaimIdle     time.Duration // pending time after which others take an entry over; default 30s
	ClaimInterval time.Duration // how often XAUTOCLAIM runs; default ClaimIdle/4

	// Retry says how often failing handlers run again before the event is
	// dead-lettered; zero fields take consumer.DefaultRetryPolicy's.
	Retry consumer.RetryPolicy
	// MaxLen, when positive, trims the events stream to about that many
	// entries on every publish (XADD MAXLEN ~). Off by default.
	MaxLen int64
	// TLS overrides the TLS settings (a rediss:// URL turns TLS on with
	// the system roots).
	TLS *tls.Config

	Workers     int // handler goroutines; default GOMAXPROCS, at least 4
	MaxInFlight int // entries read and not yet settled; default 4096

	// Logger receives the bus's logs, and go-redis's lines about the bus:
	// New routes go-redis's process-wide logger (goredis.SetLogger) to the
	// bus concerned, once per process, and go-redis's other lines to
	// slog.Default(). Default slog.Default().
	Logger *slog.Logger
	// Middleware wraps every handler subscribed to the bus, outside each
	// subscription's own (bus.WithMiddleware).
	Middleware []bus.Middleware
	// KeepGoRedisLogger leaves go-redis's process-wide logger alone, for
	// an application that sets its own with goredis.SetLogger.
	KeepGoRedisLogger bool
}

// RedactedURL is URL with any password replaced by "xxxxx".
func (c Config) RedactedURL() string { return redact.URL(c.URL) }

// LogValue keeps the password out of logs that print the whole config.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", c.RedactedURL()), slog.String("stream_prefix", c.StreamPrefix),
		slog.String("group", c.Group), slog.String("consumer", c.Consumer))
}

// String is LogValue's text: %v and %s print it, without the password.
func (c Config) String() string { return c.LogValue().String() }

// GoString is Go syntax for c with the URL's password redacted, for %#v.
func (c Config) GoString() string {
	type config Config // no methods: fmt prints its fields
	c.URL = c.RedactedURL()
	return strings.Replace(fmt.Sprintf("%#v", config(c)), "redis.config{", "redis.Config{", 1)
}

// Format keeps the password out of every verb: fmt would print the
// struct's fields for %+v, %#v, %d and others, the URL among them. %#v
// prints GoString, every other verb String.
func (c Config) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, c.GoString())
		return
	}
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), c.String())
}

// WithDefaults returns c with its zero fields set.
func (c Config) WithDefaults() Config {
	if c.StreamPrefix == "" {
		c.StreamPrefix = "eventsource"
	}
	if c.Group == "" {
		c.Group = "default"
	}
	if c.Consumer == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		c.Consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	if c.ReadCount == 0 {
		c.ReadCount = 512
	}
	if c.Block == 0 {
		c.Block = 2 * time.Second
	}
	if c.ClaimIdle == 0 {
		c.ClaimIdle = 30 * time.Second
	}
	if c.ClaimInterval == 0 {
		c.ClaimInterval = c.ClaimIdle / 4
	}
	c.Retry = c.Retry.WithDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem of c (after WithDefaults) in one error
// matching ErrInvalidConfig.
func (c Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("URL is empty"))
	} else if _, err := parseURL(c.URL); err != nil {
		errs = append(errs, err)
	}
	if c.Registry == nil {
		errs = append(errs, errors.New("Registry is nil"))
	}
	if c.StreamPrefix == "" || c.Group == "" || c.Consumer == "" {
		errs = append(errs, errors.New("StreamPrefix, Group and Consumer must not be empty"))
	}
	if c.ReadCount < 1 {
		errs = append(errs, fmt.Errorf("ReadCount must be positive, got %d", c.ReadCount))
	}
	if c.Block < time.Millisecond {
		errs = append(errs, fmt.Errorf("Block must be at least 1ms, got %v", c.Block))
	}
	if c.ClaimInterval <= 0 {
		errs = append(errs, fmt.Errorf("ClaimInterval must be positive, got %v", c.ClaimInterval))
	}
	if err := c.Retry.Validate(); err != nil {
		errs = append(errs, err)
	} else if total := c.Retry.MaxTotalBackoff(); c.ClaimIdle <= total {
		errs = append(errs, fmt.Errorf("ClaimIdle (%v) must exceed the retry policy's longest total backoff (%v), or entries waiting for a retry are claimed by other members", c.ClaimIdle, total))
	}
	if c.MaxLen < 0 {
		errs = append(errs, fmt.Errorf("MaxLen must not be negative, got %d", c.MaxLen))
	}
	if c.Workers < 0 || c.MaxInFlight < 0 {
		errs = append(errs, errors.New("Workers and MaxInFlight must not be negative"))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
}

// parseURL parses the URL without ever putting the password in an error:
// url.Parse and go-redis quote the whole URL in theirs.
func parseURL(raw string) (*goredis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("URL does not parse: %v", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("URL %s: scheme must be redis or rediss", u.Redacted())
	}
	opts, err := goredis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("URL %s does not parse", u.Redacted())
	}
	return opts, nil
}

// keys are the Redis keys of one bus and group.
type keys struct {
	events, replay, dlq string
}

func keysFor(prefix, group string) keys {
	tag := "{" + prefix + "}"
	return keys{events: tag + ":events", replay: tag + ":replay:" + group, dlq: tag + ":dlq:" + group}
}

// KeyPattern matches every key of the buses with this prefix, for tools
// and tests that clean up.
func KeyPattern(prefix string) string { return "{" + prefix + "}:*" }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
