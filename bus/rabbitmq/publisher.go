package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsource-go/eventsource/bus"
)

// Publish errors. A *PublishError matches the ones that apply with
// errors.Is.
var (
	// ErrUnroutable: no queue is bound for the event's routing key (no group
	// subscribes to its type), so the broker returned it (mandatory flag).
	ErrUnroutable = errors.New("rabbitmq bus: unroutable message")
	// ErrNacked: the broker refused the message (basic.nack).
	ErrNacked = errors.New("rabbitmq bus: message nacked by the broker")
	// ErrRefused: the broker closed the publishing channel over the
	// messages in flight on it (PRECONDITION_FAILED, such as a message over
	// its max_message_size). It matches bus.ErrTooLarge too when that was
	// the reason. The other messages in flight with the culprit share the
	// error: they were not stored, and may be published again.
	ErrRefused = errors.New("rabbitmq bus: message refused by the broker")
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
	lane          int // which of a session's publishing channels takes it
	exchange, key string
	msg           amqp.Publishing
}

// publisher publishes on one confirm-mode channel and matches the broker's
// confirmations and returns to the messages, so Publish can pipeline a
// whole batch and wait once.
//
// The unconfirmed messages are kept in a ring in delivery-tag order: the
// tags of a channel are consecutive, and amqp091 hands the confirmations
// over one per tag and in tag order (it expands multiple acks and
// resequences), so each confirmation settles the oldest entry. Nothing is
// allocated per message.
type publisher struct {
	conn      *amqp.Connection // ch's: aborting a stuck write takes it down
	ch        *amqp.Channel
	mandatory bool
	window    chan struct{} // one token per unconfirmed message

	// sending serializes publishes (the next delivery tag is ours); a
	// channel, not a mutex, so that waiting for it honours ctx while a
	// send is stuck on a blocked broker.
	sending chan struct{}

	mu    sync.Mutex // guards what follows
	ring  []pubEntry // the unconfirmed messages, cap(window) slots
	head  int        // the slot of the oldest one
	n     int        // how many there are
	first uint64     // the delivery tag of ring[head]
	dead  bool

	done chan struct{} // closed when the tracking goroutine ends
}

type pubEntry struct {
	call          *pubCall
	idx           int
	msgID         string
	exchange, key string
	returned      *amqp.Return
}

// pubCall collects the outcome of one batch.
type pubCall struct {
	errs      []error
	remaining int // guarded by publisher.mu
	done      chan struct{}
}

func newPublisher(conn *amqp.Connection, ch *amqp.Channel, window int, mandatory bool) (*publisher, error) {
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	p := &publisher{
		conn: conn, ch: ch, mandatory: mandatory, window: make(chan struct{}, window), sending: make(chan struct{}, 1),
		ring: make([]pubEntry, window), done: make(chan struct{}),
	}
	// Returns are unbuffered: the library hands a basic.return over before
	// it reads the basic.ack that follows it, so with one goroutine reading
	// both, a message is known to be returned before its ack is seen.
	returns := ch.NotifyReturn(make(chan amqp.Return))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, window+16))
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	go p.track(returns, confirms, closed)
	return p, nil
}

// at returns the k-th oldest unconfirmed entry.
func (p *publisher) at(k int) *pubEntry {
	return &p.ring[(p.head+k)%len(p.ring)]
}

// track settles entries from the broker's returns and confirmations until
// the channel closes, then fails what is left with errConnLost, or with
// the broker's refusal when it closed the channel over a message.
func (p *publisher) track(returns <-chan amqp.Return, confirms <-chan amqp.Confirmation, closed <-chan *amqp.Error) {
	defer close(p.done)
	for returns != nil || confirms != nil {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			p.mu.Lock()
			// The broker handles a channel's messages in order: the oldest
			// unconfirmed message with this ID and route not yet returned is
			// the one.
			for k := range p.n {
				if e := p.at(k); e.returned == nil && e.msgID == r.MessageId && e.key == r.RoutingKey && e.exchange == r.Exchange {
					e.returned = &r
					break
				}
			}
			p.mu.Unlock()
		case c, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			p.mu.Lock()
			p.confirmLocked(c)
			// A multiple ack arrives as a run of confirmations: settle the
			// ones already queued under the same lock. Any return they
			// follow was received above before amqp091 queued them.
			for more := len(confirms); more > 0; more-- {
				if c, ok = <-confirms; ok {
					p.confirmLocked(c)
				}
			}
			p.mu.Unlock()
		}
	}
	// amqp091 sends the close reason before it closes the notify channels.
	var reason *amqp.Error
	select {
	case reason = <-closed:
	default:
	}
	lost := refusal(reason)
	p.mu.Lock()
	p.dead = true
	for p.n > 0 {
		p.settleHeadLocked(lost)
	}
	p.mu.Unlock()
}

// confirmLocked settles the entries up to c's tag (one, as amqp091
// delivers them) with c's outcome.
func (p *publisher) confirmLocked(c amqp.Confirmation) {
	for p.n > 0 && p.first <= c.DeliveryTag {
		var err error
		switch e := p.at(0); {
		case !c.Ack:
			err = ErrNacked
		case e.returned != nil:
			err = fmt.Errorf("%w: %s (%d): routing key %q", ErrUnroutable, e.returned.ReplyText, e.returned.ReplyCode, e.returned.RoutingKey)
		}
		p.settleHeadLocked(err)
	}
}

// refusal is the error for the messages unconfirmed when the publishing
// channel closed for reason. A channel the broker closed with
// PRECONDITION_FAILED refused what was sent on it (over max_message_size,
// typically): sending it again would close the next channel too, for
// ever, and take the consumers' connection with it each time. Any other
// end is a lost connection, and the messages are sent again.
func refusal(reason *amqp.Error) error {
	if reason == nil || !reason.Server || reason.Code != amqp.PreconditionFailed {
		return errConnLost
	}
	if strings.Contains(reason.Reason, "message size") {
		return fmt.Errorf("%w: %w (%w)", ErrRefused, bus.ErrTooLarge, reason)
	}
	return fmt.Errorf("%w: %w", ErrRefused, reason)
}

// settleHeadLocked settles the oldest entry with err.
func (p *publisher) settleHeadLocked(err error) {
	e := *p.at(0)
	*p.at(0) = pubEntry{} // drop the references
	p.head = (p.head + 1) % len(p.ring)
	p.first++
	p.n--
	p.finishLocked(e.call, e.idx, err)
}

// pushLocked appends the entry of the message about to be sent with tag.
func (p *publisher) pushLocked(tag uint64, e pubEntry) {
	if p.n == 0 {
		p.first = tag
	}
	*p.at(p.n) = e
	p.n++
}

// popLocked removes the newest entry, the message with tag, when it is
// still there (track fails everything when the channel closes): amqp091
// did not send it and took its tag back.
func (p *publisher) popLocked(tag uint64, err error) {
	if p.n == 0 || p.first+uint64(p.n-1) != tag {
		return
	}
	p.n--
	e := *p.at(p.n)
	*p.at(p.n) = pubEntry{}
	p.finishLocked(e.call, e.idx, err)
}

// finishLocked records the outcome of a call's message and gives its
// window token back.
func (p *publisher) finishLocked(call *pubCall, idx int, err error) {
	call.errs[idx] = err
	call.remaining--
	if call.remaining == 0 {
		close(call.done)
	}
	<-p.window
}

// publish sends msgs, pipelined, and returns one error per message once
// the broker has confirmed or refused each: nil, or one matching
// ErrUnroutable, ErrNacked, errConnLost, or ErrUnconfirmed when ctx ended
// first.
func (p *publisher) publish(ctx context.Context, msgs []outgoing) []error {
	call, sent := p.send(ctx, msgs)
	return p.wait(ctx, call, sent, len(msgs))
}

// publishLanes is publish over several channels: each message goes on
// lanes[m.lane], in msgs' order, so the order of the messages of one lane
// holds. Every lane's messages are sent before any confirmation is waited
// for, so all the channels have theirs in flight at once.
func publishLanes(ctx context.Context, lanes []*publisher, msgs []outgoing) []error {
	if len(lanes) == 1 {
		return lanes[0].publish(ctx, msgs)
	}
	// Group msgs by lane, stably, into one array: start[l] is where lane
	// l's part begins, at[j] the index in msgs of grouped[j].
	start := make([]int, len(lanes)+1)
	for i := range msgs {
		start[msgs[i].lane+1]++
	}
	for l := range lanes {
		start[l+1] += start[l]
	}
	grouped := make([]outgoing, len(msgs))
	at := make([]int, len(msgs))
	next := append([]int(nil), start[:len(lanes)]...)
	for i := range msgs {
		j := next[msgs[i].lane]
		next[msgs[i].lane]++
		grouped[j], at[j] = msgs[i], i
	}
	calls := make([]*pubCall, len(lanes))
	sent := make([]int, len(lanes))
	for l, p := range lanes {
		if part := grouped[start[l]:start[l+1]]; len(part) > 0 {
			calls[l], sent[l] = p.send(ctx, part)
		}
	}
	errs := make([]error, len(msgs))
	for l, p := range lanes {
		if start[l] == start[l+1] {
			continue
		}
		for j, err := range p.wait(ctx, calls[l], sent[l], start[l+1]-start[l]) {
			errs[at[start[l]+j]] = err
		}
	}
	return errs
}

// send sends msgs, pipelined, without waiting for their confirmations, and
// returns the call to wait for and how many messages were sent; the
// others already carry their error in call. It keeps the channel for as
// long as the window has room, so a batch goes out in one run.
func (p *publisher) send(ctx context.Context, msgs []outgoing) (call *pubCall, sent int) {
	call = &pubCall{errs: make([]error, len(msgs)), remaining: len(msgs), done: make(chan struct{})}
	fail := func(from int, err error) {
		for i := from; i < len(msgs); i++ {
			call.errs[i] = err
		}
	}
	for sent < len(msgs) {
		select {
		case p.window <- struct{}{}:
		case <-ctx.Done():
			fail(sent, fmt.Errorf("%w: %w", ErrUnconfirmed, ctx.Err()))
			return call, sent
		case <-p.done:
			fail(sent, errConnLost)
			return call, sent
		}
		if err := p.sendRun(ctx, call, msgs, &sent); err != nil {
			fail(sent, err)
			return call, sent
		}
	}
	return call, sent
}

// sendRun sends msgs[*sent:] while the window has room, holding one token
// already, and counts them in *sent. An error fails the messages from
// *sent on: the connection was lost, or ctx ended.
func (p *publisher) sendRun(ctx context.Context, call *pubCall, msgs []outgoing, sent *int) error {
	select {
	case p.sending <- struct{}{}:
	case <-ctx.Done():
		<-p.window
		return fmt.Errorf("%w: %w", ErrUnconfirmed, ctx.Err())
	case <-p.done:
		<-p.window
		return errConnLost
	}
	defer func() { <-p.sending }()
	if ctx.Done() != nil {
		// amqp091 checks ctx only before it writes: a broker that stops
		// reading (a resource alarm) holds the socket write for as long as
		// the alarm lasts. A frame written in part cannot be taken back,
		// so a write still stuck a moment after ctx ended costs the
		// connection; the supervisor dials again.
		finished := make(chan struct{})
		stop := context.AfterFunc(ctx, func() { p.abortIfStuck(finished) })
		defer func() {
			close(finished)
			stop()
		}()
	}
	tag := p.ch.GetNextPublishSeqNo()
	for {
		m := &msgs[*sent]
		p.mu.Lock()
		if p.dead {
			p.mu.Unlock()
			<-p.window
			return errConnLost
		}
		p.pushLocked(tag, pubEntry{call: call, idx: *sent, msgID: m.msg.MessageId, exchange: m.exchange, key: m.key})
		p.mu.Unlock()
		if err := p.ch.PublishWithContext(ctx, m.exchange, m.key, p.mandatory, false, m.msg); err != nil {
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
			p.popLocked(tag, err)
			p.mu.Unlock()
			*sent++ // its error is recorded (or track's is)
			return err
		}
		*sent++
		tag++
		if *sent == len(msgs) {
			return nil
		}
		select {
		case p.window <- struct{}{}:
		default:
			return nil // wait for room without the channel
		}
	}
}

// stuckWrite is how long a write may go on after its ctx ended before
// abortIfStuck takes the connection down.
const stuckWrite = 100 * time.Millisecond

// abortIfStuck closes the connection unless the send ends (finished) within
// stuckWrite: the socket's deadline fails the pending write at once.
func (p *publisher) abortIfStuck(finished <-chan struct{}) {
	t := time.NewTimer(stuckWrite)
	defer t.Stop()
	select {
	case <-finished:
	case <-t.C:
		_ = p.conn.CloseDeadline(time.Now())
	}
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
		copy(out, call.errs)
		// Entries still pending report ErrUnconfirmed; the tracker keeps
		// them until the broker answers or the channel closes.
		for k := range p.n {
			if e := p.at(k); e.call == call {
				out[e.idx] = fmt.Errorf("%w: %w", ErrUnconfirmed, ctx.Err())
			}
		}
		return out
	}
}

// laneOf hashes an aggregate ID (FNV-1a) to one of n publishing channels.
func laneOf(aggregateID string, n int) int {
	if n <= 1 {
		return 0
	}
	h := uint32(2166136261)
	for i := 0; i < len(aggregateID); i++ {
		h ^= uint32(aggregateID[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

var _ bus.RawPublisher = (*Bus)(nil)

// PublishesRaw marks the bus as one that encodes what it publishes, so
// the outbox relay hands it stored payloads undecoded (bus.RawPublisher).
func (*Bus) PublishesRaw() {}
