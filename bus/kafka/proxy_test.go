package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/segmentio/kafka-go/protocol"
	findcoordinatorapi "github.com/segmentio/kafka-go/protocol/findcoordinator"
	metadataapi "github.com/segmentio/kafka-go/protocol/metadata"
)

// kafkaProxy stands between a client and the brokers, with a listener per
// broker. It forwards requests and responses as they are, but for the
// broker addresses in Metadata and FindCoordinator responses, which it
// replaces with its own, so that the client reaches every broker through
// it. Stall makes the brokers stop answering while every connection stays
// open, as a hung broker or a network partition does: the client then
// waits for its own timeouts.
type kafkaProxy struct {
	t       testing.TB
	stalled chan struct{} // closed by stall
	done    chan struct{} // closed at cleanup
	wg      sync.WaitGroup

	mu        sync.Mutex
	listeners map[string]net.Listener // by the broker's address
	conns     []net.Conn
	dropped   map[protocol.ApiKey]int // requests not forwarded since the stall
	stallOnce sync.Once
}

// newKafkaProxy returns a proxy whose addr is the bootstrap broker's.
func newKafkaProxy(t testing.TB, bootstrap string) *kafkaProxy {
	t.Helper()
	p := &kafkaProxy{t: t, stalled: make(chan struct{}), done: make(chan struct{}),
		listeners: map[string]net.Listener{}, dropped: map[protocol.ApiKey]int{}}
	t.Cleanup(p.close)
	if _, err := p.listener(bootstrap); err != nil {
		t.Fatal(err)
	}
	return p
}

// addr is the address that stands for the bootstrap broker.
func (p *kafkaProxy) addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.listeners {
		return l.Addr().String() // the only one before a client connects
	}
	return ""
}

// stall stops forwarding anything, in either direction, for good.
func (p *kafkaProxy) stall() { p.stallOnce.Do(func() { close(p.stalled) }) }

// droppedRequests returns how many requests of the API the proxy received
// and held back since the stall.
func (p *kafkaProxy) droppedRequests(key protocol.ApiKey) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped[key]
}

// close closes the listeners and every connection, then waits for the
// proxy's goroutines.
func (p *kafkaProxy) close() {
	p.mu.Lock()
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	for _, l := range p.listeners {
		_ = l.Close()
	}
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// listener returns the proxy's listener for the broker at upstream,
// opening it on first use.
func (p *kafkaProxy) listener(upstream string) (net.Listener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.listeners[upstream]; ok {
		return l, nil
	}
	select {
	case <-p.done:
		return nil, net.ErrClosed
	default:
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.listeners[upstream] = l
	p.wg.Go(func() { p.accept(l, upstream) })
	return l, nil
}

// track records a connection for close; it reports false (and closes c)
// once the proxy is closed.
func (p *kafkaProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		_ = c.Close()
		return false
	default:
		p.conns = append(p.conns, c)
		return true
	}
}

func (p *kafkaProxy) accept(l net.Listener, upstream string) {
	for {
		client, err := l.Accept()
		if err != nil {
			return
		}
		if !p.track(client) {
			return
		}
		p.wg.Go(func() { p.serve(client, upstream) })
	}
}

// api is what a response needs from its request to be decoded.
type api struct {
	key     protocol.ApiKey
	version int16
}

func (p *kafkaProxy) serve(client net.Conn, upstream string) {
	select {
	case <-p.stalled:
		<-p.done // a broker that accepts and never answers
		return
	default:
	}
	server, err := net.Dial("tcp", upstream)
	if err != nil || !p.track(server) {
		_ = client.Close()
		return
	}
	var mu sync.Mutex
	pending := map[int32]api{} // by correlation ID
	p.wg.Go(func() {
		defer server.Close()
		for {
			frame, err := readFrame(client)
			if err != nil || len(frame) < 12 {
				return
			}
			req := api{protocol.ApiKey(binary.BigEndian.Uint16(frame[4:])), int16(binary.BigEndian.Uint16(frame[6:]))}
			if p.holdBack(req.key) {
				return
			}
			mu.Lock()
			pending[int32(binary.BigEndian.Uint32(frame[8:]))] = req
			mu.Unlock()
			if _, err := server.Write(frame); err != nil {
				return
			}
		}
	})
	defer client.Close()
	for {
		frame, err := readFrame(server)
		if err != nil || len(frame) < 8 {
			return
		}
		id := int32(binary.BigEndian.Uint32(frame[4:]))
		mu.Lock()
		req := pending[id]
		delete(pending, id)
		mu.Unlock()
		if p.holdBack(-1) {
			return
		}
		if frame, err = p.rewrite(req, frame); err != nil {
			p.t.Errorf("kafka proxy: %v", err)
			return
		}
		if _, err := client.Write(frame); err != nil {
			return
		}
	}
}

// holdBack reports whether the proxy is stalled, after waiting for it to
// be closed; it counts the request held back.
func (p *kafkaProxy) holdBack(key protocol.ApiKey) bool {
	select {
	case <-p.stalled:
	default:
		return false
	}
	if key >= 0 {
		p.mu.Lock()
		p.dropped[key]++
		p.mu.Unlock()
	}
	<-p.done
	return true
}

// rewrite replaces the broker addresses in a Metadata or FindCoordinator
// response with the proxy's.
func (p *kafkaProxy) rewrite(req api, frame []byte) ([]byte, error) {
	if req.key != protocol.Metadata && req.key != protocol.FindCoordinator {
		return frame, nil
	}
	id, msg, err := protocol.ReadResponse(bytes.NewReader(frame), req.key, req.version)
	if err != nil {
		return nil, err
	}
	local := func(host *string, port *int32) error {
		l, err := p.listener(net.JoinHostPort(*host, strconv.Itoa(int(*port))))
		if err != nil {
			return err
		}
		a := l.Addr().(*net.TCPAddr)
		*host, *port = a.IP.String(), int32(a.Port)
		return nil
	}
	switch m := msg.(type) {
	case *metadataapi.Response:
		for i := range m.Brokers {
			if err := local(&m.Brokers[i].Host, &m.Brokers[i].Port); err != nil {
				return nil, err
			}
		}
	case *findcoordinatorapi.Response:
		if m.ErrorCode == 0 {
			if err := local(&m.Host, &m.Port); err != nil {
				return nil, err
			}
		}
	}
	var out bytes.Buffer
	if err := protocol.WriteResponse(&out, req.version, id, msg); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// readFrame reads one size-prefixed Kafka message, size included.
func readFrame(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > 64<<20 {
		return nil, errors.New("kafka proxy: frame too large")
	}
	frame := make([]byte, 4+n)
	copy(frame, size[:])
	_, err := io.ReadFull(r, frame[4:])
	return frame, err
}
