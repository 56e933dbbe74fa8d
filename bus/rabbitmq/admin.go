package rabbitmq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

func newID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// admin is the dead-letter admin API of one group. Records are messages
// of the group's dead-letter queue: reading them takes them with
// basic.get and hands them back (the broker puts them back in place when
// the channel closes), so while an admin call runs, the records it holds
// are invisible to other admin calls.
type admin struct{ b *Bus }

// channel opens a channel on the live session for one admin call.
func (a admin) channel(ctx context.Context) (*session, *amqp.Channel, error) {
	s, err := a.b.waitSession(ctx)
	if err != nil {
		return nil, nil, err
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("rabbitmq bus: open channel: %w", err)
	}
	return s, ch, nil
}

func notFound(err error) bool {
	var aerr *amqp.Error
	return errors.As(err, &aerr) && aerr.Code == amqp.NotFound
}

func (a admin) List(ctx context.Context, after string, limit int) ([]consumer.DeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	_, ch, err := a.channel(ctx)
	if err != nil {
		return nil, err
	}
	defer ch.Close() // hands back every record taken
	var out []consumer.DeadLetter
	found := after == ""
	for len(out) < limit && ctx.Err() == nil {
		d, ok, err := ch.Get(a.b.names.DeadLetterQueue, false)
		if err != nil {
			if notFound(err) {
				return nil, nil
			}
			return nil, fmt.Errorf("rabbitmq bus: list dead letters: %w", err)
		}
		if !ok {
			break
		}
		rec := parseDeadLetter(&d)
		if !found {
			found = rec.ID == after
			continue
		}
		out = append(out, rec)
	}
	return out, ctx.Err()
}

func parseDeadLetter(d *amqp.Delivery) consumer.DeadLetter {
	str := func(k string) string { s, _ := d.Headers[k].(string); return s }
	rec := consumer.DeadLetter{
		ID: str(hDeadLetterID), Reason: consumer.Reason(str(hReason)), Error: str(hError),
		Attempts: headerInt(d.Headers, hAttempts), Group: str(hGroup),
		EventID: str(hEventID), EventType: str(hEventType), AggregateType: str(hAggType), AggregateID: str(hAggID),
		Version: int64(headerInt(d.Headers, hVersion)),
		Source:  str(hSource), SourceID: str(hSourceID), Body: d.Body,
	}
	if h := str(hHandlers); h != "" {
		_ = json.Unmarshal([]byte(h), &rec.Handlers)
	}
	rec.Time, _ = time.Parse(time.RFC3339Nano, str(hTime))
	if size := headerInt(d.Headers, hDroppedSize); size > 0 {
		rec.BodyDropped, rec.Size = true, size
	}
	return rec
}

func (a admin) Count(ctx context.Context) (int64, error) {
	_, ch, err := a.channel(ctx)
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(a.b.names.DeadLetterQueue, !a.b.cfg.Transient, false, false, false, nil)
	if err != nil {
		if notFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("rabbitmq bus: count dead letters: %w", err)
	}
	return int64(q.Messages), nil
}

// replayMsg is the record as it goes back to the group's queue: the event
// headers, the failed handlers' names and the origin (es-source,
// es-source-id, which a new record keeps) stay, the retry count does not,
// so the event gets a fresh retry budget.
func (a admin) replayMsg(d *amqp.Delivery) outgoing {
	h := copyHeaders(d.Headers)
	for _, k := range []string{hDeadLetterID, hReason, hError, hAttempts, hGroup, hTime, hLastError} {
		delete(h, k)
	}
	return outgoing{key: a.b.names.Queue, msg: amqp.Publishing{
		Headers: h, ContentType: d.ContentType, DeliveryMode: amqp.Persistent,
		MessageId: d.MessageId, Timestamp: time.Now(), Body: d.Body,
	}}
}

// bodyDropped reports whether the record was stored without its bytes.
func bodyDropped(d *amqp.Delivery) bool { return headerInt(d.Headers, hDroppedSize) > 0 }

func (a admin) Replay(ctx context.Context, id string) error {
	s, ch, err := a.channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close() // hands back the records taken on the way
	for ctx.Err() == nil {
		d, ok, err := ch.Get(a.b.names.DeadLetterQueue, false)
		if err != nil && !notFound(err) {
			return fmt.Errorf("rabbitmq bus: replay dead letter %s: %w", id, err)
		}
		if !ok || err != nil {
			return fmt.Errorf("rabbitmq bus: dead letter %s of group %q: %w", id, a.b.cfg.Group, eventsource.ErrNotFound)
		}
		if str, _ := d.Headers[hDeadLetterID].(string); str != id {
			continue
		}
		if bodyDropped(&d) {
			return fmt.Errorf("rabbitmq bus: dead letter %s of group %q: %w", id, a.b.cfg.Group, consumer.ErrBodyDropped)
		}
		if err := s.pub.publish(ctx, []outgoing{a.replayMsg(&d)})[0]; err != nil {
			return fmt.Errorf("rabbitmq bus: replay dead letter %s: %w", id, err)
		}
		if err := d.Ack(false); err != nil {
			return fmt.Errorf("rabbitmq bus: replayed dead letter %s but could not remove it (it may be replayed again): %w", id, err)
		}
		return nil
	}
	return ctx.Err()
}

func (a admin) ReplayAll(ctx context.Context) (int, error) {
	n, err := a.Count(ctx)
	if err != nil || n == 0 {
		return 0, err
	}
	s, ch, err := a.channel(ctx)
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	// Only what is there now: records that fail again come back behind
	// these and wait for the next ReplayAll. Records without their bytes
	// stay taken, unacked, until the channel closes, then go back.
	replayed := 0
	for left := int(n); left > 0; {
		var ds []amqp.Delivery
		for len(ds) < min(left, 256) {
			d, ok, err := ch.Get(a.b.names.DeadLetterQueue, false)
			if err != nil {
				return replayed, fmt.Errorf("rabbitmq bus: replay dead letters: %w", err)
			}
			if !ok {
				left = 0
				break
			}
			ds = append(ds, d)
		}
		if len(ds) == 0 {
			break
		}
		left -= len(ds)
		ds = slices.DeleteFunc(ds, func(d amqp.Delivery) bool { return bodyDropped(&d) })
		if len(ds) == 0 {
			continue // publish waits for confirmations that nothing would send
		}
		msgs := make([]outgoing, len(ds))
		for i := range ds {
			msgs[i] = a.replayMsg(&ds[i])
		}
		for i, err := range s.pub.publish(ctx, msgs) {
			if err != nil {
				return replayed, fmt.Errorf("rabbitmq bus: replay dead letters: %w", err)
			}
			if err := ds[i].Ack(false); err != nil {
				return replayed, fmt.Errorf("rabbitmq bus: replay dead letters: %w", err)
			}
			replayed++
		}
	}
	return replayed, nil
}

func (a admin) Purge(ctx context.Context) (int64, error) {
	_, ch, err := a.channel(ctx)
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	n, err := ch.QueuePurge(a.b.names.DeadLetterQueue, false)
	if err != nil {
		if notFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("rabbitmq bus: purge dead letters: %w", err)
	}
	return int64(n), nil
}

// DeleteOption changes what DeleteGroup deletes.
type DeleteOption func(*deleteOptions)

type deleteOptions struct{ exchange bool }

// IncludeExchange makes DeleteGroup delete the exchange too. Every group
// of the exchange consumes through it and every publisher sends to it:
// delete it only when no bus uses it any more.
func IncludeExchange() DeleteOption { return func(o *deleteOptions) { o.exchange = true } }

// DeleteGroup deletes the queues of cfg's group (Config.Names: its queue,
// retry queues and dead-letter queue), with the messages in them, using
// cfg's URL, TLS and DialTimeout. Objects that do not exist are skipped.
// The exchange stays unless IncludeExchange is given. Tools and tests use
// it; a bus never deletes its topology. Close the group's buses first: a
// running one loses its consumer and declares the queues again when it
// reconnects.
func DeleteGroup(ctx context.Context, cfg Config, opts ...DeleteOption) error {
	var o deleteOptions
	for _, opt := range opts {
		opt(&o)
	}
	cfg = cfg.WithDefaults()
	if _, err := parseURL(cfg.URL); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(cfg.ConnectionName + " (delete group)")
	conn, err := dialContext(ctx, cfg.URL,
		amqp.Config{Heartbeat: cfg.Heartbeat, TLSClientConfig: cfg.TLS, Properties: props, Locale: "en_US"}, cfg.DialTimeout)
	if err != nil {
		return fmt.Errorf("rabbitmq bus: delete group %q: connect to %s: %w", cfg.Group, cfg.RedactedURL(), err)
	}
	release := guardConn(ctx, conn) // amqp091's calls, Close's too, take no ctx
	err = deleteTopology(conn, cfg.Names(), o.exchange)
	if cerr := conn.Close(); err == nil && !errors.Is(cerr, amqp.ErrClosed) {
		err = cerr
	}
	if err = release(err); err != nil {
		return fmt.Errorf("rabbitmq bus: delete group %q: %w", cfg.Group, err)
	}
	return nil
}

// deleteTopology deletes the group's queues and, if exchange, the
// exchange. A refusal closes the channel, so each object gets its own.
func deleteTopology(conn *amqp.Connection, n Names, exchange bool) error {
	type object struct {
		what, name string
		del        func(ch *amqp.Channel) error
	}
	var objs []object
	for _, q := range append([]string{n.Queue, n.DeadLetterQueue}, n.RetryQueues...) {
		objs = append(objs, object{"queue", q, func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(q, false, false, false)
			return err
		}})
	}
	if exchange {
		objs = append(objs, object{"exchange", n.Exchange, func(ch *amqp.Channel) error {
			return ch.ExchangeDelete(n.Exchange, false, false)
		}})
	}
	var errs []error
	for _, o := range objs {
		ch, err := conn.Channel()
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("open channel: %w", err))...) // the connection is gone
		}
		if err := o.del(ch); err != nil && !notFound(err) {
			errs = append(errs, fmt.Errorf("delete %s %q: %w", o.what, o.name, err))
		}
		_ = ch.Close()
	}
	return errors.Join(errs...)
}
