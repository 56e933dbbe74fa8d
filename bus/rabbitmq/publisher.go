package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Publish errors. A *PublishError matches the ones that apply with
// errors.Is.
var (
	// ErrUnroutable: no queue is bound for the event's routing key (no group
	// subscribes to its type), so the broker returned it (mandatory flag).
	ErrUnroutable = errors.New("rabbitmq bus: unroutable message")
	// ErrNacked: the broker refused the message (basic.nack).
	ErrNacked = errors.New("rabbitmq bus: message nacked by the broker")
	// ErrUnconfirmed: the broker's confirmation never came (the connection
	// was lost and the bus is closing, or ctx ended): the message may or
	// may not have been stored.
	ErrUnconfirmed = errors.New("rabbitmq bus: publish not confirmed")
)

// errConnLost marks a message whose confirmation was lost with its
// connection; Publish sends it again on the next one.
var errConnLost = errors.New("rabbitmq bus: connection lost before the confirmation")

// PublishError reports the events of one Publish call that the broker did
// not confirm. The others were confirmed.
type PublishError struct {
	Confirmed int            // events the broker confirmed
	Failed    []EventFailure // the rest, in publish order
}

// EventFailure is one event that was not confirmed.
type EventFailure struct {
	Index   int    // its index in the Publish call
	EventID string // envelope ID
	Err     error  // matches ErrUnroutable, ErrNacked or ErrUnconfirmed
}

func (e *PublishError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rabbitmq bus: publish: %d of %d events not confirmed", len(e.Failed), len(e.Failed)+e.Confirmed)
	for i, f := range e.Failed {
		if i == 3 {
			fmt.Fprintf(&b, "; …")
			break
		}
		fmt.Fprintf(&b, "; event %d (%s): %v", f.Index, f.EventID, f.Err)
	}
	return b.String()
}

// Unwrap returns the distinct causes, for errors.Is.
func (e *PublishError) Unwrap() []error {
	var out []error
	for _, f := range e.Failed {
		dup := false
		for _, o := range out {
			if o == f.Err {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, f.Err)
		}
	}
	return out
}

// outgoing is one message to publish.
type outgoing struct {
	exchange, key string
	msg           amqp.Publishing
}

// publisher publishes on one confirm-mode channel and matches the broker's
// confirmations and returns to the messages, so Publish can pipeline a
// whole batch and wait once.
type publisher struct {
	ch        *amqp.Channel
	mandatory bool
	window    chan struct{} // one token per unconfirmed message

	pubMu sync.Mutex // serializes publishes: the next delivery tag is ours

	mu      sync.Mutex // guards what follows
	pending map[uint64]*pubEntry
	byID    map[string][]uint64 // unconfirmed tags by message ID, oldest first
	dead    bool

	done chan struct{} // closed when the tracking goroutine ends
}

type pubEntry struct {
	call     *pubCall
	idx      int
	msgID    string
	returned *amqp.Return
}

// pubCall collects the outcome of one batch.
type pubCall struct {
	errs      []error
	remaining int // guarded by publisher.mu
	done      chan struct{}
}

func newPublisher(ch *amqp.Channel, window int, mandatory bool) (*publisher, error) {
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	p := &publisher{
		ch: ch, mandatory: mandatory, window: make(chan struct{}, window),
		pending: map[uint64]*pubEntry{}, byID: map[string][]uint64{}, done: make(chan struct{}),
	}
	// Returns are unbuffered: the library hands a basic.return over before
	// it reads the basic.ack that follows it, so with one goroutine reading
	// both, a message is known to be returned before its ack is seen.
	returns := ch.NotifyReturn(make(chan amqp.Return))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, window+16))
	go p.track(returns, confirms)
	return p, nil
}

// track settles entries from the broker's returns and confirmations until
// the channel closes, then fails what is left with errConnLost.
func (p *publisher) track(returns <-chan amqp.Return, confirms <-chan amqp.Confirmation) {
	defer close(p.done)
	for returns != nil || confirms != nil {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			p.mu.Lock()
			if tags := p.byID[r.MessageId]; len(tags) > 0 {
				// The broker handles a channel's messages in order: the
				// oldest unconfirmed message with this ID is the one.
				for _, tag := range tags {
					if e := p.pending[tag]; e != nil && e.returned == nil {
						e.returned = &r
						break
					}
				}
			}
			p.mu.Unlock()
		case c, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			p.mu.Lock()
			if e := p.pending[c.DeliveryTag]; e != nil {
				var err error
				switch {
				case !c.Ack:
					err = ErrNacked
				case e.returned != nil:
					err = fmt.Errorf("%w: %s (%d): routing key %q", ErrUnroutable, e.returned.ReplyText, e.returned.ReplyCode, e.returned.RoutingKey)
				}
				p.settleLocked(c.DeliveryTag, e, err)
			}
			p.mu.Unlock()
		}
	}
	p.mu.Lock()
	p.dead = true
	for tag, e := range p.pending {
		p.settleLocked(tag, e, errConnLost)
	}
	p.mu.Unlock()
}

func (p *publisher) settleLocked(tag uint64, e *pubEntry, err error) {
	delete(p.pending, tag)
	if tags := p.byID[e.msgID]; len(tags) <= 1 {
		delete(p.byID, e.msgID)
	} else {
		for i, t := range tags {
			if t == tag {
				p.byID[e.msgID] = append(tags[:i:i], tags[i+1:]...)
				break
			}
		}
	}
	e.call.errs[e.idx] = err
	e.call.remaining--
	if e.call.remaining == 0 {
		close(e.call.done)
	}
	<-p.window
}

// publish sends msgs, pipelined, and returns one error per message once
// the broker has confirmed or refused each: nil, or one matching
// ErrUnroutable, ErrNacked, errConnLost, or ErrUnconfirmed when ctx ended
// first.
func (p *publisher) publish(ctx context.Context, msgs []outgoing) []error {
	call := &pubCall{errs: make([]error, len(msgs)), remaining: len(msgs), done: make(chan struct{})}
	sent := 0
	fail := func(from int, err error) {
		for i := from; i < len(msgs); i++ {
			call.errs[i] = err
		}
	}
	for i := range msgs {
		select {
		case p.window <- struct{}{}:
		case <-ctx.Done():
			fail(i, fmt.Errorf("%w: %w", ErrUnconfirmed, ctx.Err()))
			return p.wait(ctx, call, sent, len(msgs))
		case <-p.done:
			fail(i, errConnLost)
			return p.wait(ctx, call, sent, len(msgs))
		}
		m := &msgs[i]
		p.pubMu.Lock()
		tag := p.ch.GetNextPublishSeqNo()
		p.mu.Lock()
		if p.dead {
			p.mu.Unlock()
			p.pubMu.Unlock()
			<-p.window
			fail(i, errConnLost)
			return p.wait(ctx, call, sent, len(msgs))
		}
		p.pending[tag] = &pubEntry{call: call, idx: i, msgID: m.msg.MessageId}
		p.byID[m.msg.MessageId] = append(p.byID[m.msg.MessageId], tag)
		p.mu.Unlock()
		err := p.ch.PublishWithContext(ctx, m.exchange, m.key, p.mandatory, false, m.msg)
		p.pubMu.Unlock()
		if err != nil {
			// Not sent: no confirmation will come for this tag. The channel
			// is most likely closed; track fails the rest at its end. The
			// rest are failed as lost (so Publish sends them again) even
			// when track got to this entry first: amqp091's own error here
			// (504, channel not open) would end Publish on a mere reconnect.
			if ctx.Err() != nil {
				err = fmt.Errorf("%w: %w", ErrUnconfirmed, ctx.Err())
			} else {
				err = errConnLost
			}
			p.mu.Lock()
			if e := p.pending[tag]; e != nil {
				p.settleLocked(tag, e, err)
			}
			p.mu.Unlock()
			sent++
			fail(i+1, err)
			return p.wait(ctx, call, sent, len(msgs))
		}
		sent++
	}
	return p.wait(ctx, call, sent, len(msgs))
}

// wait waits for the confirmations of the first sent messages; the others
// already carry their error.
func (p *publisher) wait(ctx context.Context, call *pubCall, sent, total int) []error {
	if unsent := total - sent; unsent > 0 {
		p.mu.Lock()
		call.remaining -= unsent // never sent: nothing to wait for
		if call.remaining == 0 {
			close(call.done)
		}
		p.mu.Unlock()
	}
	select {
	case <-call.done:
		return call.errs
	case <-ctx.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		out := make([]error, len(call.errs))
		for i, err := range call.errs {
			out[i] = err
		}
		// Entries still pending report ErrUnconfirmed; the tracker keeps
		// them until the broker answers or the channel closes.
		for _, e := range p.pending {
			if e.call == call {
				out[e.idx] = fmt.Errorf("%w: %w", ErrUnconfirmed, ctx.Err())
			}
		}
		return out
	}
}
