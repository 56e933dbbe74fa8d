package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// ErrInvalidConfig matches every error Validate returns.
var ErrInvalidConfig = errors.New("kafka bus: invalid config")

// ErrMissingTopic matches the error New and Subscribe return when a topic
// the bus needs does not exist and Config.CreateTopics is off.
var ErrMissingTopic = errors.New("kafka bus: topic does not exist")

// Acks is how many acknowledgements a publish waits for. The zero value is
// AcksAll, unlike kafka-go's Writer, whose zero value waits for none.
type Acks int

const (
	// AcksAll waits for every in-sync replica (acks=all).
	AcksAll Acks = iota
	// AcksLeader waits for the partition leader only (acks=1).
	AcksLeader
	// AcksNone does not wait (acks=0): Publish can return before the
	// broker has the events, and lose them.
	AcksNone
)

func (a Acks) String() string {
	switch a {
	case AcksAll:
		return "all"
	case AcksLeader:
		return "leader"
	case AcksNone:
		return "none"
	}
	return "Acks(" + strconv.Itoa(int(a)) + ")"
}

func (a Acks) required() kafkago.RequiredAcks {
	switch a {
	case AcksLeader:
		return kafkago.RequireOne
	case AcksNone:
		return kafkago.RequireNone
	}
	return kafkago.RequireAll
}

// Config configures a Bus. Zero fields take the defaults listed.
type Config struct {
	// Brokers are host:port addresses of the bootstrap brokers. Required.
	Brokers []string
	// Registry decodes the events this bus consumes. Required.
	Registry *eventsource.Registry

	// Topic receives every event; default "eventsource.events". It also
	// names the group's retry and dead-letter topics:
	// <Topic>.retry.<Group> and <Topic>.dlq.<Group>.
	Topic string
	// TopicPerAggregateType publishes each event to <Topic>.<aggregate
	// type> instead, for the aggregate types listed in AggregateTypes
	// (required then); the consumer reads all of them.
	TopicPerAggregateType bool
	AggregateTypes        []string

	// Group is the consumer group; default "default".
	Group string

	// CreateTopics creates missing topics at New (events topics) and at
	// the first subscription (the group's retry and dead-letter topics).
	// Off by default: topics are then expected to exist.
	CreateTopics bool
	// Partitions and ReplicationFactor of created events and retry topics
	// (defaults 6 and 1). The dead-letter topic gets one partition, so
	// that its records keep one order, and cleanup.policy=compact with
	// retention.ms=-1, so that a dead letter stays until it is replayed or
	// purged; one created by other means needs the same.
	Partitions        int
	ReplicationFactor int

	// Acks is what Publish waits for; default AcksAll.
	Acks Acks
	// BatchSize is the most events per partition in one produce request
	// (default 1000). BatchTimeout is how long a partial batch waits for
	// more events (of concurrent Publish calls) before it is sent (default
	// 1ms; kafka-go's own default, 1s, would be the latency of every
	// Publish that does not fill a batch).
	BatchSize    int
	BatchTimeout time.Duration
	// BatchBytes bounds one produce request per partition (default 1 MiB,
	// Kafka's default message.max.bytes).
	BatchBytes int64

	// SASL authenticates to the brokers when set (kafka-go's
	// sasl/plain or sasl/scram mechanisms); TLS encrypts the connections
	// when set. Without TLS, SASL PLAIN sends the password in clear text.
	SASL sasl.Mechanism
	TLS  *tls.Config

	// Retry says how often failing handlers run again, through the
	// group's retry topic, before the event is dead-lettered; zero fields
	// take consumer.DefaultRetryPolicy's.
	Retry consumer.RetryPolicy

	// SessionTimeout: a member that has not sent a heartbeat for that long
	// is removed from the group and its partitions reassigned (default
	// 10s; the broker bounds it, Kafka to at least 6s by default).
	// HeartbeatInterval is how often members heartbeat, which is also how
	// soon a member learns of a rebalance (default SessionTimeout/10).
	// RebalanceTimeout is how long the coordinator waits for every member
	// to rejoin during a rebalance (default 30s).
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	RebalanceTimeout  time.Duration
	// DrainTimeout bounds how long a member, when its partitions are
	// revoked or at Close, waits for the events it already fetched to be
	// handled before it commits and lets go (default the shorter of
	// RebalanceTimeout/2 and SessionTimeout/2). Events still running then
	// are handled again by the next owner. It must be shorter than
	// SessionTimeout: kafka-go sends no heartbeat while a member drains,
	// and the coordinator would expel it and hand its partitions on while
	// it still handles their events.
	DrainTimeout time.Duration
	// CommitInterval is how often handled offsets are committed while
	// consuming (default 500ms); revocation and Close commit at once.
	CommitInterval time.Duration

	// MaxWait bounds how long a fetch waits for new events (default
	// 250ms; also how long Close can wait for a reader to stop); MaxBytes
	// bounds one fetch (default 10 MiB).
	MaxWait  time.Duration
	MaxBytes int

	Workers     int // handler goroutines; default GOMAXPROCS, at least 4
	MaxInFlight int // events fetched and not yet settled; default 4096

	// DialTimeout bounds connecting to a broker (default 10s).
	DialTimeout time.Duration

	Logger *slog.Logger // default slog.Default()
	// Middleware wraps every handler subscribed to the bus, outside each
	// subscription's own (bus.WithMiddleware).
	Middleware []bus.Middleware
}

// LogValue keeps secrets out of logs that print the whole config: only
// the SASL mechanism's name is shown.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.Any("brokers", c.Brokers), slog.String("topic", c.Topic), slog.String("group", c.Group),
		slog.String("acks", c.Acks.String()), slog.Bool("tls", c.TLS != nil),
	}
	if c.SASL != nil {
		attrs = append(attrs, slog.String("sasl", c.SASL.Name()))
	}
	return slog.GroupValue(attrs...)
}

// String is LogValue's text, for %v.
func (c Config) String() string { return c.LogValue().String() }

// GoString is Go syntax for c with the SASL mechanism shown by its name
// only, for %#v.
func (c Config) GoString() string {
	type config Config // no methods: fmt prints its fields
	if c.SASL != nil {
		c.SASL = saslName(c.SASL.Name())
	}
	return strings.Replace(fmt.Sprintf("%#v", config(c)), "kafka.config{", "kafka.Config{", 1)
}

// Format keeps the SASL credentials out of every verb: String covers %v
// and %s only, and fmt prints the struct's fields, SASL's among them, for
// %#v, %d and others. %#v prints GoString, every other verb String.
func (c Config) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, c.GoString())
		return
	}
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), c.String())
}

// saslName stands in for a SASL mechanism in GoString.
type saslName string

func (n saslName) Name() string { return string(n) }

func (saslName) Start(context.Context) (sasl.StateMachine, []byte, error) {
	return nil, nil, errors.New("kafka bus: a printed SASL mechanism cannot authenticate")
}

// WithDefaults returns c with its zero fields set.
func (c Config) WithDefaults() Config {
	if c.Topic == "" {
		c.Topic = "eventsource.events"
	}
	if c.Group == "" {
		c.Group = "default"
	}
	if c.Partitions == 0 {
		c.Partitions = 6
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = 1
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.BatchTimeout == 0 {
		c.BatchTimeout = time.Millisecond
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 1 << 20
	}
	c.Retry = c.Retry.WithDefaults()
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = c.SessionTimeout / 10
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = 30 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = min(c.RebalanceTimeout, c.SessionTimeout) / 2
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = 500 * time.Millisecond
	}
	if c.MaxWait == 0 {
		c.MaxWait = 250 * time.Millisecond
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 10 << 20
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Kafka topic names: at most 249 of these characters.
var legalTopic = regexp.MustCompile(`^[a-zA-Z0-9._-]+$`)

func checkTopic(name string) error {
	if len(name) > 249 || !legalTopic.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("topic %q is not a legal Kafka topic name (at most 249 of [a-zA-Z0-9._-])", name)
	}
	return nil
}

// Validate reports every problem of c (after WithDefaults) in one error
// matching ErrInvalidConfig.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("Brokers is empty"))
	}
	for _, b := range c.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("broker %q is not host:port", b))
		}
	}
	if c.Registry == nil {
		errs = append(errs, errors.New("Registry is nil"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("Group is empty"))
	}
	if c.TopicPerAggregateType && len(c.AggregateTypes) == 0 {
		errs = append(errs, errors.New("TopicPerAggregateType needs AggregateTypes, the types whose topics the bus uses"))
	}
	if !c.TopicPerAggregateType && len(c.AggregateTypes) > 0 {
		errs = append(errs, errors.New("AggregateTypes is set but TopicPerAggregateType is not"))
	}
	topics := append(c.eventTopics(), c.retryTopic(), c.dlqTopic())
	for _, t := range topics {
		if err := checkTopic(t); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Partitions < 1 || c.ReplicationFactor < 1 {
		errs = append(errs, fmt.Errorf("Partitions (%d) and ReplicationFactor (%d) must be positive", c.Partitions, c.ReplicationFactor))
	}
	if c.Acks < AcksAll || c.Acks > AcksNone {
		errs = append(errs, fmt.Errorf("Acks %d is not one of AcksAll, AcksLeader, AcksNone", int(c.Acks)))
	}
	if c.BatchSize < 1 || c.BatchTimeout < 0 || c.BatchBytes < 1 {
		errs = append(errs, fmt.Errorf("BatchSize (%d) and BatchBytes (%d) must be positive, BatchTimeout (%v) not negative", c.BatchSize, c.BatchBytes, c.BatchTimeout))
	}
	if err := c.Retry.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.HeartbeatInterval <= 0 || c.SessionTimeout < 3*c.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("HeartbeatInterval (%v) must be positive and at most a third of SessionTimeout (%v)", c.HeartbeatInterval, c.SessionTimeout))
	}
	if c.DrainTimeout <= 0 || c.DrainTimeout >= c.RebalanceTimeout || c.DrainTimeout >= c.SessionTimeout {
		errs = append(errs, fmt.Errorf("DrainTimeout (%v) must be positive and shorter than RebalanceTimeout (%v) and SessionTimeout (%v), or a draining member is dropped from the group",
			c.DrainTimeout, c.RebalanceTimeout, c.SessionTimeout))
	}
	if c.CommitInterval <= 0 || c.MaxWait <= 0 || c.MaxBytes < 1 || c.DialTimeout <= 0 {
		errs = append(errs, errors.New("CommitInterval, MaxWait, MaxBytes and DialTimeout must be positive"))
	}
	if c.Workers < 0 || c.MaxInFlight < 0 {
		errs = append(errs, errors.New("Workers and MaxInFlight must not be negative"))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
}

// eventTopics are the topics events are published to and consumed from.
func (c Config) eventTopics() []string {
	if !c.TopicPerAggregateType {
		return []string{c.Topic}
	}
	out := make([]string, 0, len(c.AggregateTypes))
	for _, t := range c.AggregateTypes {
		out = append(out, c.Topic+"."+t)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// topicFor is the topic of one event, "" if its aggregate type is not
// listed.
func (c Config) topicFor(aggregateType string) string {
	if !c.TopicPerAggregateType {
		return c.Topic
	}
	if !slices.Contains(c.AggregateTypes, aggregateType) {
		return ""
	}
	return c.Topic + "." + aggregateType
}

func (c Config) retryTopic() string { return c.Topic + ".retry." + c.Group }
func (c Config) dlqTopic() string   { return c.Topic + ".dlq." + c.Group }

// Topics returns every topic a bus with this config uses: the events
// topics, then the group's retry and dead-letter topics. Tools and tests
// use it to create or delete them.
func (c Config) Topics() []string {
	c = c.WithDefaults()
	return append(c.eventTopics(), c.retryTopic(), c.dlqTopic())
}
