package rabbitmq

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/internal/redact"
)

// ErrInvalidConfig matches every error Validate returns.
var ErrInvalidConfig = errors.New("rabbitmq bus: invalid config")

// Config configures a Bus. Zero fields take the defaults listed.
type Config struct {
	// URL is amqp://user:password@host:port/vhost, or amqps:// for TLS.
	// Logs and errors show it with the password redacted.
	URL string
	// TLS overrides the TLS settings (an amqps:// URL turns TLS on with the
	// system roots and the URL's host as server name).
	TLS *tls.Config
	// Registry decodes the events this bus consumes. Required. New installs
	// a name validator on it, so that type names AMQP topic routing cannot
	// carry are refused at registration (see ValidateTypeName).
	Registry *eventsource.Registry

	Exchange string // topic exchange every event is published to; default "eventsource"
	// ExchangeType is "topic" (the default); a plugin type ("x-…") must
	// route like a topic exchange, since bindings are "*.{type}" and "#".
	ExchangeType string
	Group        string // consumer group; default "default"

	// Prefetch is the broker's bound on unacknowledged deliveries per
	// member (basic.qos); default 1024, at most 65535.
	Prefetch int
	// Retry says how often failing handlers run again, and after which
	// waits, before the event is dead-lettered; zero fields take
	// consumer.DefaultRetryPolicy's. Waits are spent in the group's delay
	// queues on the broker, not in memory.
	Retry consumer.RetryPolicy

	// Transient declares the exchange and queues non-durable: they vanish
	// with a broker restart. Durable (false) is the default.
	Transient bool
	// QuorumQueues declares the group's queues as quorum queues
	// (replicated; needs a durable topology). Existing queues keep the type
	// they were declared with: changing it means deleting them first.
	QuorumQueues bool

	// ConfirmWindow bounds the messages published and not yet confirmed by
	// the broker, over all publishing channels; Publish waits for room at
	// the bound. Default 4096.
	ConfirmWindow int
	// MaxMessageSize is the largest encoded event Publish sends; a larger
	// one fails Publish with bus.ErrTooLarge before anything is sent.
	// Default 16 MiB, RabbitMQ 4's max_message_size (3.x: 128 MiB): set it
	// to the broker's. An event over the broker's limit that gets past
	// this one fails with ErrRefused, at the cost of a reconnect.
	MaxMessageSize int
	// PublishChannels is how many confirm-mode channels Publish spreads
	// events over, by a hash of the aggregate ID: one aggregate's events
	// always take the same channel, so the broker keeps their order, and
	// the broker handles the channels in parallel. Default 4; 1 sends
	// everything on one channel in publish order.
	PublishChannels int
	// AllowUnroutable publishes without the mandatory flag: a message no
	// queue is bound for is dropped by the broker instead of failing
	// Publish with ErrUnroutable. Off by default.
	AllowUnroutable bool

	Heartbeat   time.Duration // AMQP heartbeat; default 10s
	DialTimeout time.Duration // TCP, TLS and AMQP handshake; default 10s
	// ReconnectMin and ReconnectMax bound the wait between redials after a
	// lost connection, doubling from the first to the second; defaults
	// 100ms and 5s.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// OpTimeout bounds how long Subscribe and Unsubscribe wait for the
	// broker (a connection, a declare, a bind); default 30s.
	OpTimeout time.Duration

	Workers     int // handler goroutines; default GOMAXPROCS, at least 4
	MaxInFlight int // deliveries dispatched and not yet settled; default Prefetch

	// ConnectionName is shown by the broker's management tools; default
	// "eventsource/<group>".
	ConnectionName string
	Logger         *slog.Logger // default slog.Default()
	// Middleware wraps every handler subscribed to the bus, outside each
	// subscription's own (bus.WithMiddleware).
	Middleware []bus.Middleware
}

// RedactedURL is URL with any password replaced by "xxxxx".
func (c Config) RedactedURL() string { return redact.URL(c.URL) }

// LogValue keeps the password out of logs that print the whole config.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", c.RedactedURL()), slog.String("exchange", c.Exchange),
		slog.String("group", c.Group), slog.Bool("quorum", c.QuorumQueues))
}

// String is LogValue's text: %v and %s print it, without the password.
func (c Config) String() string { return c.LogValue().String() }

// GoString is Go syntax for c with the URL's password redacted, for %#v.
func (c Config) GoString() string {
	type config Config // no methods: fmt prints its fields
	c.URL = c.RedactedURL()
	return strings.Replace(fmt.Sprintf("%#v", config(c)), "rabbitmq.config{", "rabbitmq.Config{", 1)
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
	if c.Exchange == "" {
		c.Exchange = "eventsource"
	}
	if c.ExchangeType == "" {
		c.ExchangeType = amqp.ExchangeTopic
	}
	if c.Group == "" {
		c.Group = "default"
	}
	if c.Prefetch == 0 {
		c.Prefetch = 1024
	}
	c.Retry = c.Retry.WithDefaults()
	if c.ConfirmWindow == 0 {
		c.ConfirmWindow = 4096
	}
	if c.PublishChannels == 0 {
		c.PublishChannels = 4
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 16 << 20
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 10 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = 100 * time.Millisecond
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = max(5*time.Second, c.ReconnectMin)
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 30 * time.Second
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = c.Prefetch
	}
	if c.ConnectionName == "" {
		c.ConnectionName = "eventsource/" + c.Group
	}
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
	for what, name := range map[string]string{"Exchange": c.Exchange, "Group": c.Group} {
		if name == "" || len(name) > 200 || strings.HasPrefix(name, "amq.") {
			errs = append(errs, fmt.Errorf("%s %q must be 1 to 200 bytes and not start with \"amq.\"", what, name))
		}
	}
	if c.ExchangeType != amqp.ExchangeTopic && !strings.HasPrefix(c.ExchangeType, "x-") {
		errs = append(errs, fmt.Errorf("ExchangeType %q cannot route by event type: use %q (or a topic-compatible plugin type x-…)", c.ExchangeType, amqp.ExchangeTopic))
	}
	if c.Prefetch < 1 || c.Prefetch > 65535 {
		errs = append(errs, fmt.Errorf("Prefetch must be within [1, 65535], got %d", c.Prefetch))
	}
	if err := c.Retry.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.QuorumQueues && c.Transient {
		errs = append(errs, errors.New("QuorumQueues needs a durable topology (Transient is set)"))
	}
	if c.ConfirmWindow < 1 {
		errs = append(errs, fmt.Errorf("ConfirmWindow must be positive, got %d", c.ConfirmWindow))
	}
	if c.MaxMessageSize < 1 {
		errs = append(errs, fmt.Errorf("MaxMessageSize must be positive, got %d", c.MaxMessageSize))
	}
	if c.PublishChannels < 1 || c.PublishChannels > 64 {
		errs = append(errs, fmt.Errorf("PublishChannels must be within [1, 64], got %d", c.PublishChannels))
	}
	if c.Heartbeat < 0 || c.DialTimeout <= 0 || c.OpTimeout <= 0 {
		errs = append(errs, errors.New("Heartbeat must not be negative; DialTimeout and OpTimeout must be positive"))
	}
	if c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin {
		errs = append(errs, fmt.Errorf("reconnect backoff must satisfy 0 < ReconnectMin (%v) <= ReconnectMax (%v)", c.ReconnectMin, c.ReconnectMax))
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
// url.Parse quotes the whole URL in its errors.
func parseURL(raw string) (amqp.URI, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return amqp.URI{}, fmt.Errorf("URL does not parse: %v", err)
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return amqp.URI{}, fmt.Errorf("URL %s: scheme must be amqp or amqps", u.Redacted())
	}
	uri, err := amqp.ParseURI(raw)
	if err != nil {
		return amqp.URI{}, fmt.Errorf("URL %s does not parse", u.Redacted())
	}
	return uri, nil
}

// ValidateTypeName reports a type name that AMQP topic routing cannot
// carry: routing keys are "{aggregate_type}.{event_type}" and bindings
// "*.{event_type}", so '.' would split the name into words and '*' and '#'
// would be wildcards. The error matches eventsource.ErrInvalidEvent.
func ValidateTypeName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: rabbitmq bus: empty event type name", eventsource.ErrInvalidEvent)
	}
	if i := strings.IndexAny(name, ".*#"); i >= 0 {
		return fmt.Errorf("%w: rabbitmq bus: event type name %q contains %q, which AMQP topic routing reserves",
			eventsource.ErrInvalidEvent, name, name[i])
	}
	if len(name) > 200 {
		return fmt.Errorf("%w: rabbitmq bus: event type name %q is longer than 200 bytes", eventsource.ErrInvalidEvent, name)
	}
	return nil
}

// Names are the broker objects of one exchange and group.
type Names struct {
	Exchange        string
	Queue           string   // the group's queue: members compete for it
	DeadLetterQueue string   // the group's dead letters
	RetryQueues     []string // delay queues, one per failed-attempt count (1 … MaxRetries-1)
}

// Names returns the broker objects a bus with this config uses, defaults
// applied, for tools and tests that inspect or delete them (see
// DeleteGroup).
func (c Config) Names() Names {
	c = c.WithDefaults()
	q := c.Exchange + "." + c.Group
	n := Names{Exchange: c.Exchange, Queue: q, DeadLetterQueue: q + ".dlq"}
	for k := 1; k < c.Retry.MaxRetries; k++ {
		n.RetryQueues = append(n.RetryQueues, retryQueueName(q, k))
	}
	return n
}

func retryQueueName(queue string, failures int) string {
	return queue + ".retry." + strconv.Itoa(failures)
}
