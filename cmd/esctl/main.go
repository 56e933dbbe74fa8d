// Command esctl is the operator's tool for an eventsource deployment: the
// dead letters of every consumer group on Redis, RabbitMQ and Kafka (list,
// show, replay, purge), a live tail of the events on a bus, the store's
// global order and streams, the checkpoints of projections and relays
// (position, head, lag; reset, rebuild), and a live web console.
//
// It is configured by flags and by the same EVENTSOURCE_* variables as the
// tests. Passwords never reach its output: every line it writes goes through
// a filter that replaces the configured secrets.
//
// Exit codes: 0 ok, 1 failure, 2 usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

const topUsage = `esctl: operate an eventsource deployment

usage: esctl <command> [flags] [args]

dead letters (-bus redis|rabbitmq|kafka, -group G[,G...]):
  dlq list      [-reason R] [-type T] [-handler H] [-aggregate ID] [-limit N]
  dlq show      ID
  dlq replay    ID... | -all | [-reason R] [-type T] [-handler H]
  dlq purge     -all | [-reason R] [-type T] [-handler H]
  dlq count

bus:
  tail          [-type T,...] [-aggregate ID] [-n N] [-for D]   live events (JSON lines with -o json)
  bus stats     broker-side figures per group (backlog, pending, lag, dead letters)

store (-sqlite-path FILE or -postgres-url URL):
  store read    [-from POSITION] [-limit N] [-type T] [-aggregate ID]
  store load    STREAM-ID [-from VERSION]
  store count

projections and relays (checkpoints in the store):
  status                       position, head, lag of every checkpoint
  projection reset NAME        set the checkpoint to 0 (-to P for another position)
  projection rebuild NAME      reset, then follow the running projection back to the head

console:
  console       [-listen 127.0.0.1:8080] [-token T]   the live web console

Every command takes -o table|json and the connection flags; "esctl <command> -h"
lists them. Variables: EVENTSOURCE_REDIS_URL, EVENTSOURCE_AMQP_URL,
EVENTSOURCE_KAFKA_BROKERS, EVENTSOURCE_POSTGRES_URL, EVENTSOURCE_SQLITE_PATH,
EVENTSOURCE_BUS, EVENTSOURCE_GROUP, EVENTSOURCE_CONSOLE_TOKEN.
Exit codes: 0 ok, 1 failure, 2 usage.
`

// command is one subcommand: its name path and its body.
type command struct {
	name string
	run  func(ctx context.Context, e *env, args []string) error
}

var commands = []command{
	{"dlq list", cmdDLQList},
	{"dlq show", cmdDLQShow},
	{"dlq replay", cmdDLQReplay},
	{"dlq purge", cmdDLQPurge},
	{"dlq count", cmdDLQCount},
	{"tail", cmdTail},
	{"bus stats", cmdBusStats},
	{"store read", cmdStoreRead},
	{"store load", cmdStoreLoad},
	{"store count", cmdStoreCount},
	{"status", cmdStatus},
	{"projection reset", cmdProjectionReset},
	{"projection rebuild", cmdProjectionRebuild},
	{"relay status", cmdStatus},
	{"console", cmdConsole},
}

// run is the whole program, testable in process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	secrets := &scrubber{}
	// Before anything is echoed (an unknown command repeats its words):
	// the URLs of the environment, and any argument that holds a password.
	for _, v := range []string{"EVENTSOURCE_REDIS_URL", "EVENTSOURCE_AMQP_URL", "EVENTSOURCE_KAFKA_BROKERS", "EVENTSOURCE_POSTGRES_URL"} {
		secrets.addURL(os.Getenv(v))
	}
	for _, a := range args {
		secrets.addURL(a)
	}
	out := &scrubWriter{w: stdout, s: secrets}
	errw := &scrubWriter{w: stderr, s: secrets}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(errw, topUsage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	var cmd *command
	var rest []string
	for i := range commands {
		c := &commands[i]
		n := len(splitWords(c.name))
		if len(args) >= n && joinWords(args[:n]) == c.name {
			cmd, rest = c, args[n:]
			break
		}
	}
	if cmd == nil {
		fmt.Fprintf(errw, "esctl: unknown command %q\n\n%s", joinWords(args[:min(2, len(args))]), topUsage)
		return exitUsage
	}
	e := &env{stdout: out, stderr: errw, secrets: secrets, isTerminal: isTerminal(stdout), name: cmd.name}
	e.log = slog.New(slog.NewTextHandler(errw, &slog.HandlerOptions{Level: slog.LevelWarn}))
	err := cmd.run(ctx, e, rest)
	var uerr *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &uerr):
		fmt.Fprintf(errw, "esctl %s: %v\n", cmd.name, err)
		return exitUsage
	default:
		fmt.Fprintf(errw, "esctl %s: %v\n", cmd.name, err)
		return exitFailure
	}
}
