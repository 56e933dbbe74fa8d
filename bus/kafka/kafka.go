package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus"
	"github.com/eventsource-go/eventsource/bus/consumer"
	"github.com/eventsource-go/eventsource/internal/sleep"
)

// Bus is the Kafka bus. It implements bus.Bus and bus.MultiTypeSubscriber.
type Bus struct {
	*consumer.Front // Subscribe, SubscribeTypes, SubscribeAll, Start, Stats
	closer          bus.CloseOnce
	gate            consumer.Gate
	cfg             Config
	log             *slog.Logger
	codec           eventsource.JSONCodec

	net       *netGuard          // dials all of the below, and cuts them off when Close gives up
	transport *kafkago.Transport // shared by the writer and the admin client
	client    *kafkago.Client
	writer    *kafkago.Writer
	dialer    *kafkago.Dialer // for the consumer group and the partition readers

	d        *consumer.Dispatcher
	counters consumer.Counters

	groupMu   sync.Mutex // guards group
	group     *kafkago.ConsumerGroup
	loopCtx   context.Context
	stopLoops context.CancelFunc
	loops     sync.WaitGroup
	hardStop  chan struct{} // closed when Close gives up (giveUp)
	gaveUp    sync.Once

	generations, abandoned atomic.Uint64
}

var (
	_ bus.Bus                 = (*Bus)(nil)
	_ bus.MultiTypeSubscriber = (*Bus)(nil)
)

// New validates cfg, checks that the brokers answer and that the events
// topics exist (creating them if cfg.CreateTopics), and returns a bus.
// Nothing is consumed until Start.
func New(ctx context.Context, cfg Config) (*Bus, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Bus{
		cfg:      cfg,
		log:      cfg.Logger.With(slog.String("bus", "kafka"), slog.String("group", cfg.Group)),
		codec:    eventsource.NewJSONCodec(cfg.Registry),
		hardStop: make(chan struct{}),
	}
	b.net = newNetGuard(cfg.DialTimeout)
	b.transport = newTransport(cfg, b.net.DialContext)
	b.client = &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: b.transport, Timeout: cfg.DialTimeout}
	b.dialer = &kafkago.Dialer{Timeout: cfg.DialTimeout, DialFunc: b.net.DialContext, SASLMechanism: cfg.SASL, TLS: cfg.TLS, ClientID: "eventsource"}
	if err := b.ensureTopics(ctx, cfg.eventTopics(), cfg.Partitions); err != nil {
		b.transport.CloseIdleConnections()
		return nil, err
	}
	b.writer = &kafkago.Writer{
		Addr: kafkago.TCP(cfg.Brokers...),
		// Murmur2 of the key, as Kafka's Java producer partitions: each
		// aggregate's events land on one partition, in order, whichever
		// client wrote them. kafka-go's default ignores keys.
		Balancer:     &kafkago.Murmur2Balancer{},
		RequiredAcks: cfg.Acks.required(),
		BatchSize:    cfg.BatchSize,
		BatchTimeout: cfg.BatchTimeout,
		BatchBytes:   cfg.BatchBytes,
		// Ride out a leader change or a broker restart of a few seconds
		// (about 5s of backoff in all). kafka-go sleeps between attempts
		// where nothing can wake it, and Close waits for the writer: a
		// short longest backoff keeps Close near its ctx's deadline.
		MaxAttempts:     writeAttempts,
		WriteBackoffMin: 20 * time.Millisecond,
		WriteBackoffMax: writeBackoffMax,
		Transport:       b.transport,
		ErrorLogger:     b.kafkaLogger(),
	}
	d, err := consumer.New(consumer.Config{
		Group: cfg.Group, Registry: cfg.Registry, Settler: settler{b}, Retry: cfg.Retry,
		Workers: cfg.Workers, MaxInFlight: cfg.MaxInFlight, Logger: b.log, Counters: &b.counters, Middleware: cfg.Middleware,
		// Failed events go to the retry topic; holding them in memory
		// would hold back the partition's commit point.
		BrokerRetries: true,
	})
	if err != nil {
		_ = b.writer.Close()
		b.transport.CloseIdleConnections()
		return nil, err
	}
	b.d = d
	b.Front = consumer.NewFront(d, transport{b}, &b.gate)
	b.loopCtx, b.stopLoops = context.WithCancel(context.Background())
	return b, nil
}

// The writer's retries: kafka-go's backoff before attempt n is n²·20ms up
// to writeBackoffMax, so 20, 80, 180, then 250ms: about 5s over 23
// attempts.
const (
	writeAttempts   = 23
	writeBackoffMax = 250 * time.Millisecond
)

// kafkaLogger hands kafka-go's error log to slog. kafka-go reports there
// what it retries on its own (a lost connection, a leader change).
func (b *Bus) kafkaLogger() kafkago.Logger {
	return kafkago.LoggerFunc(func(msg string, args ...any) {
		b.log.LogAttrs(context.Background(), slog.LevelWarn, "kafka-go: "+fmt.Sprintf(msg, args...))
	})
}

// Config returns the bus's configuration, defaults applied.
func (b *Bus) Config() Config { return b.cfg }

// Topics returns the topics this bus uses: events, then the group's retry
// and dead-letter topics.
func (b *Bus) Topics() []string { return b.cfg.Topics() }

// Publish writes the events, all in one Writer call (one produce request
// per partition and batch), keyed by aggregate ID, and returns once the
// broker acknowledged them as Config.Acks says. An invalid envelope fails
// the whole call before anything is sent. On error some events may have
// been written; publishing again can duplicate them.
func (b *Bus) Publish(ctx context.Context, events ...eventsource.Envelope) error {
	if ok, err := b.gate.EnterPublish(events); !ok {
		return err
	}
	defer b.gate.Leave()
	msgs := make([]kafkago.Message, len(events))
	hdrs := newBatchHeaders(events)
	for i := range events {
		env := &events[i]
		topic := b.cfg.topicFor(env.AggregateType)
		if topic == "" {
			return fmt.Errorf("%w: envelope %d: aggregate type %q has no topic (Config.AggregateTypes)", eventsource.ErrInvalidEvent, i, env.AggregateType)
		}
		data, err := b.codec.Marshal(*env)
		if err != nil {
			return err
		}
		key, headers := hdrs.event(env)
		msgs[i] = kafkago.Message{Topic: topic, Key: key, Value: data, Headers: headers, Time: env.OccurredAt}
	}
	err := b.writer.WriteMessages(ctx, msgs...)
	if err == nil {
		b.counters.Published.Add(uint64(len(msgs)))
		return nil
	}
	written, err := publishError(events, err)
	b.counters.Published.Add(uint64(written))
	return err
}

// transport starts the Kafka side of consuming for the Front.
type transport struct{ b *Bus }

// StartConsuming joins the consumer group.
func (t transport) StartConsuming(ctx context.Context) error { return t.b.joinGroup(ctx) }

// joinGroup makes sure the group's retry and dead-letter topics exist and
// starts consuming.
func (b *Bus) joinGroup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.DialTimeout+5*time.Second)
	defer cancel()
	if err := b.ensureTopics(ctx, []string{b.cfg.retryTopic()}, b.cfg.Partitions); err != nil {
		return err
	}
	if err := b.ensureTopics(ctx, []string{b.cfg.dlqTopic()}, 1); err != nil {
		return err
	}
	g, err := kafkago.NewConsumerGroup(kafkago.ConsumerGroupConfig{
		ID: b.cfg.Group, Brokers: b.cfg.Brokers, Dialer: b.dialer,
		Topics:            append(b.cfg.eventTopics(), b.cfg.retryTopic()),
		HeartbeatInterval: b.cfg.HeartbeatInterval, SessionTimeout: b.cfg.SessionTimeout,
		RebalanceTimeout: b.cfg.RebalanceTimeout, JoinGroupBackoff: 200 * time.Millisecond,
		StartOffset: kafkago.FirstOffset, // a new group reads what was published before it
		Timeout:     b.cfg.DialTimeout,
		ErrorLogger: b.kafkaLogger(),
	})
	if err != nil {
		return fmt.Errorf("kafka bus: consumer group %q: %w", b.cfg.Group, err)
	}
	b.groupMu.Lock()
	b.group = g
	b.groupMu.Unlock()
	b.loops.Go(b.consumeLoop)
	return nil
}

// consumeLoop runs one generation of the group after another until Close.
func (b *Bus) consumeLoop() {
	ctx := b.loopCtx
	failing := false
	for {
		gen, err := b.group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafkago.ErrGroupClosed) {
				return
			}
			// kafka-go retries joining on its own (after JoinGroupBackoff);
			// Next reports each failure.
			if !failing {
				b.log.LogAttrs(ctx, slog.LevelWarn, "joining the consumer group failed; retrying", slog.Any("error", err))
			}
			failing = true
			continue
		}
		if failing {
			failing = false
			b.counters.Reconnects.Add(1)
			b.log.LogAttrs(ctx, slog.LevelInfo, "consumer group joined again")
		}
		b.generations.Add(1)
		b.runGeneration(gen)
	}
}

// generation is one assignment of partitions to this member.
type generation struct {
	gen   *kafkago.Generation
	parts []*partition

	commitMu sync.Mutex // serialises commits, so an older commit point never lands after a newer one
	last     map[*partition]int64
}

func (b *Bus) runGeneration(kg *kafkago.Generation) {
	g := &generation{gen: kg, last: map[*partition]int64{}}
	var assigned []slog.Attr
	for topic, parts := range kg.Assignments {
		ids := make([]int, 0, len(parts))
		for _, a := range parts {
			p := newPartition(topic, a.ID, a.Offset)
			g.parts = append(g.parts, p)
			ids = append(ids, a.ID)
		}
		assigned = append(assigned, slog.Any(topic, ids))
	}
	b.log.LogAttrs(b.loopCtx, slog.LevelDebug, "partitions assigned",
		slog.Int("generation", int(kg.ID)), slog.Attr{Key: "partitions", Value: slog.GroupValue(assigned...)})
	for _, p := range g.parts {
		kg.Start(func(ctx context.Context) { b.consumePartition(ctx, g, p) })
	}
	kg.Start(func(ctx context.Context) { b.commitLoop(ctx, g) })
}

// commitLoop commits every partition's commit point every CommitInterval.
// Each partition commits once more itself when the generation ends.
func (b *Bus) commitLoop(ctx context.Context, g *generation) {
	t := time.NewTicker(b.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := b.commit(g, g.parts...); err != nil {
				b.log.LogAttrs(ctx, slog.LevelWarn, "committing offsets failed; will try again", slog.Any("error", err))
			}
		}
	}
}

// commit commits the partitions' commit points that moved since their last
// commit.
func (b *Bus) commit(g *generation, parts ...*partition) error {
	g.commitMu.Lock()
	defer g.commitMu.Unlock()
	offsets := map[string]map[int]int64{}
	var moved []*partition
	for _, p := range parts {
		off, ok := p.commitPoint()
		if last, done := g.last[p]; !ok || (done && off <= last) {
			continue
		}
		if offsets[p.topic] == nil {
			offsets[p.topic] = map[int]int64{}
		}
		offsets[p.topic][p.id] = off
		moved = append(moved, p)
	}
	if len(moved) == 0 {
		return nil
	}
	if err := g.gen.CommitOffsets(offsets); err != nil {
		return err
	}
	for _, p := range moved {
		g.last[p] = offsets[p.topic][p.id]
	}
	return nil
}

// consumePartition fetches one partition and dispatches its events until
// the generation ends, then drains: it waits (up to DrainTimeout) for the
// events it dispatched to settle and commits, so that the partition's next
// owner starts where this member stopped.
func (b *Bus) consumePartition(ctx context.Context, g *generation, p *partition) {
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers: b.cfg.Brokers, Topic: p.topic, Partition: p.id, Dialer: b.dialer,
		MinBytes: 1, MaxBytes: b.cfg.MaxBytes, MaxWait: b.cfg.MaxWait,
		QueueCapacity:  1024,
		ReadBackoffMin: 20 * time.Millisecond, ReadBackoffMax: time.Second,
		ErrorLogger: b.kafkaLogger(),
	})
	start, ok := p.commitPoint()
	if !ok {
		start = kafkago.FirstOffset
	}
	if err := r.SetOffset(start); err != nil {
		b.log.LogAttrs(ctx, slog.LevelError, "seeking failed", slog.String("topic", p.topic), slog.Int("partition", p.id), slog.Any("error", err))
	}
	retry := p.topic == b.cfg.retryTopic()
	batch := make([]consumer.Message, 1)
	for ctx.Err() == nil {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				break
			}
			b.log.LogAttrs(ctx, slog.LevelWarn, "fetching failed; retrying", slog.String("topic", p.topic),
				slog.Int("partition", p.id), slog.Any("error", err))
			if !sleep.For(ctx, 100*time.Millisecond) {
				break
			}
			continue
		}
		msg, due := b.toMessage(p, m)
		if retry && !due.IsZero() {
			// The retry topic holds each event until its backoff is over;
			// waiting here holds back only this retry partition.
			if !sleep.For(ctx, time.Until(due)) {
				break // not dispatched: the commit point stays before it
			}
		}
		p.fetched(m.Offset)
		batch[0] = msg
		if _, err := b.d.DispatchBatch(ctx, batch); err != nil {
			p.release(1) // the generation ended while the dispatcher was full
			break
		}
	}
	_ = r.Close()
	b.drain(g, p)
}

// drain waits for p's dispatched events to settle, then commits.
func (b *Bus) drain(g *generation, p *partition) {
	deadline := time.NewTimer(b.cfg.DrainTimeout)
	defer deadline.Stop()
wait:
	for p.pending() > 0 {
		select {
		case <-p.wake:
		case <-deadline.C:
			break wait
		case <-b.hardStop:
			break wait
		}
	}
	if n := p.pending(); n > 0 {
		b.abandoned.Add(uint64(n))
		b.log.LogAttrs(context.Background(), slog.LevelWarn, "letting go of a partition with events still being handled; its next owner handles them again",
			slog.String("topic", p.topic), slog.Int("partition", p.id), slog.Int("events", n))
	}
	if err := b.commit(g, p); err != nil {
		b.log.LogAttrs(context.Background(), slog.LevelWarn, "committing offsets at revocation failed; the next owner re-reads from the last commit",
			slog.String("topic", p.topic), slog.Int("partition", p.id), slog.Any("error", err))
	}
}

// ref is what a dispatched message carries back to the settler.
type ref struct {
	p       *partition
	offset  int64
	headers []kafkago.Header
}

// toMessage turns a Kafka message into a dispatcher message and, for the
// retry topic, returns when it is due.
func (b *Bus) toMessage(p *partition, m kafkago.Message) (consumer.Message, time.Time) {
	msg := consumer.Message{
		Source: p.topic, ID: strconv.Itoa(p.id) + ":" + strconv.FormatInt(m.Offset, 10),
		Ref: ref{p: p, offset: m.Offset, headers: m.Headers}, Key: string(m.Key), Body: m.Value, Attempt: 1,
	}
	var due time.Time
	var originPart, originOff string
	for _, h := range m.Headers {
		switch h.Key {
		case hdrEventType:
			msg.Type = string(h.Value)
		case hdrAggregateID:
			msg.Key = string(h.Value)
		case hdrAttempt:
			if n, err := strconv.Atoi(string(h.Value)); err == nil && n > 0 {
				msg.Attempt = n
			}
		case hdrHandlers:
			msg.Handlers = decodeHandlers(h.Value)
		case hdrRetryAt:
			if ms, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil && ms > 0 {
				due = time.UnixMilli(ms)
			}
		case hdrOriginTopic:
			msg.Source = string(h.Value)
		case hdrOriginPartition:
			originPart = string(h.Value)
		case hdrOriginOffset:
			originOff = string(h.Value)
		}
	}
	if originPart != "" && originOff != "" {
		// A retried or replayed event keeps the position it was first
		// read at: dead letters name it, and it identifies the record.
		msg.ID = originPart + ":" + originOff
	}
	return msg, due
}

// Generations returns how many group generations (assignments after a
// join or rebalance) this member has had.
func (b *Bus) Generations() uint64 { return b.generations.Load() }

// Abandoned returns how many events were still being handled when their
// partition was let go after DrainTimeout (or when Close gave up): the
// partition's next owner handles them again.
func (b *Bus) Abandoned() uint64 { return b.abandoned.Load() }

// DeadLetters returns the admin API of this bus's group's dead letters.
func (b *Bus) DeadLetters() consumer.Admin { return admin{b} }

// Close stops publishing, leaves the group after draining: the events
// already fetched are handled (up to DrainTimeout) and their offsets
// committed, then the connections close. If ctx ends first, handlers'
// contexts are cancelled, what is left is not committed (the group's next
// member handles it again), the bus's connections are cut off, which
// fails the writes still in flight or in kafka-go's retries (a Publish
// waiting for them returns an error matching bus.ErrClosed), and Close
// returns an error matching ctx.Err() once every goroutine has stopped.
func (b *Bus) Close(ctx context.Context) error {
	return b.closer.Do(ctx, func() error { return b.close(ctx) })
}

func (b *Bus) close(ctx context.Context) error {
	shutErr := b.gate.Shut(ctx)

	b.stopLoops()
	b.groupMu.Lock()
	group := b.group
	b.groupMu.Unlock()
	stopped := make(chan struct{})
	go func() {
		if group != nil {
			_ = group.Close() // ends the generation: partitions drain, commit, and the member leaves
		}
		b.loops.Wait()
		close(stopped)
	}()
	var err error
	select {
	case <-stopped:
		err = b.d.Close(ctx)
	case <-ctx.Done():
		b.giveUp()
		err = fmt.Errorf("kafka bus: close: %w", ctx.Err())
		_ = b.d.Close(ctx) // cancels handlers, releases what is left
		<-stopped
	}
	if err == nil && shutErr != nil {
		err = fmt.Errorf("kafka bus: close: %w", shutErr)
	}
	// The writer's Close waits for the writes kafka-go still sends or
	// retries, a Publish's that gave up waiting included.
	writerClosed := make(chan error, 1)
	go func() { writerClosed <- b.writer.Close() }()
	var werr error
	select {
	case werr = <-writerClosed:
	case <-ctx.Done():
		b.giveUp()
		werr = <-writerClosed // at most one of kafka-go's backoffs (writeBackoffMax) away
		if err == nil {
			err = fmt.Errorf("kafka bus: close: %w", ctx.Err())
		}
	}
	err = errors.Join(err, werr)
	b.transport.CloseIdleConnections()
	return err
}

// giveUp ends what Close no longer waits for: draining partitions let go,
// and every broker connection is cut off, so that kafka-go's requests and
// retries fail at once.
func (b *Bus) giveUp() {
	b.gaveUp.Do(func() {
		close(b.hardStop)
		b.net.cutOff()
	})
}

var _ bus.RawPublisher = (*Bus)(nil)

// PublishesRaw marks the bus as one that encodes what it publishes, so
// the outbox relay hands it stored payloads undecoded (bus.RawPublisher).
func (*Bus) PublishesRaw() {}
