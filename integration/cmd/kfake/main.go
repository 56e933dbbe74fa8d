// Command kfake runs a Kafka-protocol broker (github.com/twmb/franz-go/pkg/kfake)
// for the Kafka bus's tests and benchmarks: CI builds it as a binary and
// starts it on 127.0.0.1:9092, so that no Apache Kafka (and no JVM) is needed.
//
//	kfake -addr 127.0.0.1 -port 9092 [-advertise HOST:PORT] [-data-dir DIR] [-partitions 6]
//
// -advertise is the address clients are told to connect to (Metadata's
// broker host and port) when it is not the one listened on: behind a
// container's published port, say. In a container image it can come from
// the environment as Apache Kafka's images take it:
// KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://HOST:PORT, with the port listened
// on from KAFKA_LISTENERS=PLAINTEXT://[HOST]:PORT (flags win).
//
// It prints "kfake: listening on HOST:PORT" once it accepts connections and
// exits cleanly, persisting its state when -data-dir is set, on SIGTERM or
// SIGINT.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("kfake", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1", "host or IP to listen on")
	port := fs.Int("port", 9092, "port to listen on")
	dataDir := fs.String("data-dir", "", "directory to persist topics, offsets and groups in (empty: memory only)")
	partitions := fs.Int("partitions", 6, "partitions of topics created without a count (CreateTopics with -1, auto-creation)")
	minSession := fs.Duration("group-min-session-timeout", 500*time.Millisecond,
		"smallest consumer-group session timeout the broker accepts (Kafka's default is 6s; tests use shorter ones)")
	autoCreate := fs.Bool("auto-create-topics", false, "create topics on first metadata request, as Kafka's auto.create.topics.enable")
	advertise := fs.String("advertise", "", "HOST:PORT to tell clients to connect to (default: the address listened on)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if v, ok := listenerFromEnv("KAFKA_LISTENERS"); ok && !set["port"] {
		if h, p, err := net.SplitHostPort(v); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				*port = n
			}
			if !set["addr"] {
				*addr = h // empty: every interface
			}
		}
	}
	if v, ok := listenerFromEnv("KAFKA_ADVERTISED_LISTENERS"); ok && !set["advertise"] {
		*advertise = v
	}
	if *advertise != "" {
		if _, _, err := net.SplitHostPort(*advertise); err != nil {
			fmt.Fprintf(os.Stderr, "kfake: -advertise %q: %v\n", *advertise, err)
			return 2
		}
	}
	if *port < 1 || *port > 65535 || *partitions < 1 {
		fmt.Fprintln(os.Stderr, "kfake: -port must be 1..65535 and -partitions at least 1")
		return 2
	}
	host := *addr
	opts := []kfake.Opt{
		kfake.Ports(*port),
		// kfake listens on 127.0.0.1 unless told otherwise.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			l, err := net.Listen(network, net.JoinHostPort(host, strconv.Itoa(*port)))
			if err != nil || *advertise == "" {
				return l, err
			}
			return advertisedListener{l, *advertise}, nil
		}),
		kfake.DefaultNumPartitions(*partitions),
		kfake.GroupMinSessionTimeout(*minSession),
	}
	if *dataDir != "" {
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	if *autoCreate {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			fmt.Fprintf(os.Stderr, "kfake: cannot listen on %s: %v\n", net.JoinHostPort(host, strconv.Itoa(*port)), opErr.Err)
		} else {
			fmt.Fprintf(os.Stderr, "kfake: %v\n", err)
		}
		return 1
	}
	for _, a := range c.ListenAddrs() {
		fmt.Printf("kfake: listening on %s\n", a)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	s := <-sigs
	fmt.Fprintf(os.Stderr, "kfake: %v: shutting down\n", s)
	c.Close() // with -data-dir, writes what is still buffered
	return 0
}

// advertisedListener is a listener whose Addr is the address clients are to
// use: kfake tells them the address of its listener.
type advertisedListener struct {
	net.Listener
	addr string
}

func (l advertisedListener) Addr() net.Addr { return advertisedAddr(l.addr) }

type advertisedAddr string

func (a advertisedAddr) Network() string { return "tcp" }
func (a advertisedAddr) String() string  { return string(a) }

// listenerFromEnv is the HOST:PORT of the PLAINTEXT listener in the
// variable name, as Apache Kafka's images read it
// ("PLAINTEXT://HOST:PORT,CONTROLLER://...").
func listenerFromEnv(name string) (string, bool) {
	for l := range strings.SplitSeq(os.Getenv(name), ",") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "PLAINTEXT://"); ok {
			return rest, true
		}
	}
	return "", false
}
