// Command kfake runs a Kafka-protocol broker (github.com/twmb/franz-go/pkg/kfake)
// for the Kafka bus's tests and benchmarks: CI builds it as a binary and
// starts it on 127.0.0.1:9092, so that no Apache Kafka (and no JVM) is needed.
//
//	kfake -addr 127.0.0.1 -port 9092 [-data-dir DIR] [-partitions 6]
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
	if err := fs.Parse(args); err != nil {
		return 2
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
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(*port)))
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
