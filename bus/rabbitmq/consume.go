package rabbitmq

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource/bus/consumer"
)

// delivery is what the settler needs to settle a message: the session it
// came on (its delivery tag means nothing on another) and the headers.
type delivery struct {
	s       *session
	tag     uint64
	headers amqp.Table
	msgID   string
}

// readLoop hands the deliveries of one session to the dispatcher, in
// batches of what has arrived, until the session or Close ends it.
func (b *Bus) readLoop(s *session, deliveries <-chan amqp.Delivery) {
	batch := make([]consumer.Message, 0, 256)
	for {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-deliveries:
		case <-b.readCtx.Done():
			return // undispatched deliveries go back to the queue with the channel
		}
		if !ok {
			// The channel closed, or the broker cancelled the consumer (its
			// queue was deleted): a new session redeclares and consumes.
			s.fail(fmt.Errorf("rabbitmq bus: consumer of %q stopped", b.names.Queue))
			return
		}
		batch = append(batch[:0], b.toMessage(s, &d))
	fill:
		for len(batch) < cap(batch) {
			select {
			case d, ok = <-deliveries:
				if !ok {
					break fill
				}
				batch = append(batch, b.toMessage(s, &d))
			default:
				break fill
			}
		}
		if _, err := b.d.DispatchBatch(b.readCtx, batch); err != nil {
			return
		}
	}
}

// toMessage turns a delivery into a dispatcher message. The headers give
// the aggregate (so the worker is chosen without decoding) and the type
// (so a type no local handler wants is acked without decoding); bytes
// published by hand without them are decoded first.
func (b *Bus) toMessage(s *session, d *amqp.Delivery) consumer.Message {
	msg := consumer.Message{
		Source: b.names.Queue, ID: d.MessageId, Body: d.Body,
		Ref: &delivery{s: s, tag: d.DeliveryTag, headers: d.Headers, msgID: d.MessageId},
	}
	msg.Key, _ = d.Headers[hAggID].(string)
	msg.Type, _ = d.Headers[hEventType].(string)
	msg.Attempt = 1 + headerInt(d.Headers, hAttempts)
	if d.Redelivered {
		// A quorum queue counts earlier deliveries; a classic one only says
		// there was at least one.
		if n := headerInt(d.Headers, "x-delivery-count"); n > 0 {
			msg.Attempt += n
		} else {
			msg.Attempt++
		}
	}
	if h, ok := d.Headers[hHandlers].(string); ok && h != "" {
		_ = json.Unmarshal([]byte(h), &msg.Handlers)
	}
	return msg
}

func headerInt(h amqp.Table, key string) int {
	switch v := h[key].(type) {
	case int:
		return v
	case int8:
		return int(v)
	case int16:
		return int(v)
	case int32:
		return int(v)
	case int64:
		return int(v)
	case uint8:
		return int(v)
	case uint16:
		return int(v)
	case uint32:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v)
		return n
	}
	return 0
}

// acker acknowledges the deliveries of one consumer channel. Delivery
// tags on a channel count up from 1; a batch is acked with one
// multiple=true ack only up to the highest tag below which every tag is
// settled, so no message still being handled is acked with it. Settled
// tags above a gap wait for it to close, or, past a bound, are acked one
// by one so that the prefetch window does not fill with them.
type acker struct {
	mu    sync.Mutex
	ch    *amqp.Channel
	base  uint64              // every tag up to base is settled and acked
	ready map[uint64]struct{} // settled, waiting for the gap below to close
	done  map[uint64]struct{} // acked or nacked on their own
	limit int
}

func newAcker(ch *amqp.Channel, limit int) *acker {
	return &acker{ch: ch, ready: map[uint64]struct{}{}, done: map[uint64]struct{}{}, limit: max(limit, 1)}
}

// ack settles tags whose handlers succeeded.
func (a *acker) ack(tags []uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, t := range tags {
		if t > a.base {
			a.ready[t] = struct{}{}
		}
	}
	a.advanceLocked()
	if len(a.ready) > a.limit {
		for t := range a.ready {
			_ = a.ch.Ack(t, false)
			delete(a.ready, t)
			a.done[t] = struct{}{}
		}
	}
}

// settleOne settles one tag on its own (an ack after a dead letter or a
// reschedule, a nack at release).
func (a *acker) settleOne(tag uint64, settle func(ch *amqp.Channel, tag uint64) error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if tag <= a.base {
		return nil
	}
	if _, ok := a.done[tag]; ok {
		return nil
	}
	delete(a.ready, tag)
	err := settle(a.ch, tag)
	a.done[tag] = struct{}{}
	a.advanceLocked()
	return err
}

// advanceLocked moves base over the settled prefix and acks the ready
// tags in it with one multiple ack of the highest.
func (a *acker) advanceLocked() {
	var hi uint64
	for {
		t := a.base + 1
		if _, ok := a.ready[t]; ok {
			delete(a.ready, t)
			hi = t
		} else if _, ok := a.done[t]; ok {
			delete(a.done, t)
		} else {
			break
		}
		a.base = t
	}
	if hi > 0 {
		// Errors mean the channel is gone: the broker redelivers.
		_ = a.ch.Ack(hi, true)
	}
}

// flush acks every ready tag, at Close, when no gap will close any more.
func (a *acker) flush() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for t := range a.ready {
		_ = a.ch.Ack(t, false)
		delete(a.ready, t)
		a.done[t] = struct{}{}
	}
}

// settler acknowledges, reschedules and dead-letters for the dispatcher.
// A message whose session is lost cannot be settled: the broker requeued
// it when the channel closed and delivers it again, so it is dropped here.
type settler struct{ b *Bus }

func ref(m consumer.Message) *delivery { r, _ := m.Ref.(*delivery); return r }

func (settler) Ack(_ context.Context, msgs []consumer.Message) error {
	var (
		cur  *session
		tags []uint64
	)
	flush := func() {
		if cur != nil && len(tags) > 0 && !cur.isLost() && cur.acks != nil {
			cur.acks.ack(tags)
		}
		tags = tags[:0]
	}
	for _, m := range msgs {
		r := ref(m)
		if r == nil {
			continue
		}
		if r.s != cur {
			flush()
			cur = r.s
		}
		tags = append(tags, r.tag)
	}
	flush()
	return nil
}

func (settler) Release(_ context.Context, msgs []consumer.Message) {
	for _, m := range msgs {
		if r := ref(m); r != nil && !r.s.isLost() && r.s.acks != nil {
			_ = r.s.acks.settleOne(r.tag, func(ch *amqp.Channel, tag uint64) error { return ch.Nack(tag, false, true) })
		}
	}
}

// DeadLetter publishes the record to the group's dead-letter queue, waits
// for the broker's confirmation, then acks the original.
func (s settler) DeadLetter(ctx context.Context, msg consumer.Message, rec consumer.DeadLetter) error {
	b := s.b
	r := ref(msg)
	if r == nil || r.s.isLost() {
		return nil
	}
	h := copyHeaders(r.headers)
	delete(h, hAttempts)
	delete(h, hLastError)
	id, _ := newID()
	h[hDeadLetterID] = id
	h[hReason] = string(rec.Reason)
	h[hError] = truncate(rec.Error, 4096)
	h[hAttempts] = int32(rec.Attempts)
	h[hGroup] = rec.Group
	h[hTime] = rec.Time.Format(time.RFC3339Nano)
	// A replayed message carries the origin of its record: keep the first.
	if src, _ := h[hSource].(string); src == "" {
		h[hSource], h[hSourceID] = rec.Source, rec.SourceID
	}
	handlers, _ := json.Marshal(rec.Handlers)
	if rec.Handlers == nil {
		handlers = []byte("[]")
	}
	h[hHandlers] = string(handlers)
	setIfEmpty(h, hEventID, rec.EventID)
	setIfEmpty(h, hEventType, rec.EventType)
	setIfEmpty(h, hAggType, rec.AggregateType)
	setIfEmpty(h, hAggID, rec.AggregateID)
	if _, ok := h[hVersion]; !ok && rec.Version != 0 {
		h[hVersion] = rec.Version
	}
	if rec.BodyDropped {
		h[hDroppedSize] = int64(rec.Size)
	}
	out := outgoing{key: b.names.DeadLetterQueue, msg: amqp.Publishing{
		Headers: h, ContentType: "application/json", DeliveryMode: amqp.Persistent,
		MessageId: r.msgID, Timestamp: rec.Time, Body: rec.Body,
	}}
	return s.forward(ctx, r, out)
}

// Reschedule publishes the message to the group's delay queue for its
// number of failed attempts; when its TTL runs out the broker routes it
// back to the group's queue. Then it acks the original.
func (s settler) Reschedule(ctx context.Context, msg consumer.Message, retry consumer.Retry) error {
	b := s.b
	r := ref(msg)
	if r == nil || r.s.isLost() {
		return nil
	}
	if len(b.names.RetryQueues) == 0 {
		return fmt.Errorf("rabbitmq bus: no delay queue (MaxRetries is 1)")
	}
	k := min(max(retry.Attempts, 1), len(b.names.RetryQueues))
	h := copyHeaders(r.headers)
	h[hAttempts] = int32(retry.Attempts)
	handlers, _ := json.Marshal(retry.Handlers)
	h[hHandlers] = string(handlers)
	h[hLastError] = truncate(retry.Error, 1024)
	out := outgoing{key: b.names.RetryQueues[k-1], msg: amqp.Publishing{
		Headers: h, ContentType: "application/json", DeliveryMode: amqp.Persistent,
		MessageId: r.msgID, Timestamp: time.Now(), Body: msg.Body,
		Expiration: strconv.FormatInt(max(retry.Delay.Milliseconds(), 0), 10),
	}}
	return s.forward(ctx, r, out)
}

// forward publishes out on the delivery's session, confirmed, then acks
// the delivery. If the session is lost on the way, the broker redelivers
// the original, so nothing more is done.
func (s settler) forward(ctx context.Context, r *delivery, out outgoing) error {
	errs := r.s.pub.publish(ctx, []outgoing{out})
	if err := errs[0]; err != nil {
		if r.s.isLost() {
			return nil
		}
		return fmt.Errorf("rabbitmq bus: forward to %q: %w", out.key, err)
	}
	if r.s.acks != nil {
		// An ack that fails means the channel is gone: the original comes
		// back, a duplicate of what was forwarded, which at-least-once
		// allows; forwarding it again would not help.
		_ = r.s.acks.settleOne(r.tag, func(ch *amqp.Channel, tag uint64) error { return ch.Ack(tag, false) })
	}
	return nil
}

func copyHeaders(h amqp.Table) amqp.Table {
	out := make(amqp.Table, len(h)+10)
	for k, v := range h {
		out[k] = v
	}
	delete(out, "x-death") // the broker's record of the delay queues
	delete(out, "x-first-death-exchange")
	delete(out, "x-first-death-queue")
	delete(out, "x-first-death-reason")
	delete(out, "x-last-death-exchange")
	delete(out, "x-last-death-queue")
	delete(out, "x-last-death-reason")
	delete(out, "x-delivery-count")
	return out
}

func setIfEmpty(h amqp.Table, key, v string) {
	if s, _ := h[key].(string); s == "" && v != "" {
		h[key] = v
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
