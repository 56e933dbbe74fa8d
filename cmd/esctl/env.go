package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// errHelp ends a command after -h printed its flags: exit 0.
var errHelp = errors.New("help requested")

// env is what every command gets: where to write, and the configuration
// read from flags and EVENTSOURCE_* variables.
type env struct {
	name       string
	stdout     io.Writer
	stderr     io.Writer
	secrets    *scrubber
	isTerminal bool
	log        *slog.Logger

	output  string // table or json
	timeout time.Duration

	bus          string
	redisURL     string
	amqpURL      string
	kafkaBrokers string
	prefix       string // Redis stream prefix
	exchange     string // RabbitMQ exchange
	topic        string // Kafka topic
	groups       string // comma-separated

	sqlitePath  string
	postgresURL string
}

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// flagSet returns the command's flag set with the shared flags on it.
func (e *env) flagSet(usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("esctl "+e.name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: esctl %s %s\n\nflags:\n", e.name, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&e.output, "o", "table", "output: table or json")
	fs.DurationVar(&e.timeout, "timeout", 30*time.Second, "how long one broker or database call may take")
	fs.StringVar(&e.bus, "bus", os.Getenv("EVENTSOURCE_BUS"), "redis, rabbitmq or kafka (default: the only one configured; $EVENTSOURCE_BUS)")
	fs.StringVar(&e.redisURL, "redis-url", os.Getenv("EVENTSOURCE_REDIS_URL"), "Redis URL ($EVENTSOURCE_REDIS_URL)")
	fs.StringVar(&e.amqpURL, "amqp-url", os.Getenv("EVENTSOURCE_AMQP_URL"), "RabbitMQ URL ($EVENTSOURCE_AMQP_URL)")
	fs.StringVar(&e.kafkaBrokers, "kafka-brokers", os.Getenv("EVENTSOURCE_KAFKA_BROKERS"), "Kafka brokers host:port,... ($EVENTSOURCE_KAFKA_BROKERS)")
	fs.StringVar(&e.prefix, "prefix", "eventsource", "Redis stream prefix (redis.Config.StreamPrefix)")
	fs.StringVar(&e.exchange, "exchange", "eventsource", "RabbitMQ exchange (rabbitmq.Config.Exchange)")
	fs.StringVar(&e.topic, "topic", "eventsource.events", "Kafka events topic (kafka.Config.Topic)")
	fs.StringVar(&e.groups, "group", os.Getenv("EVENTSOURCE_GROUP"), "consumer group(s), comma-separated (default: every group found on Redis and Kafka, \"default\" on RabbitMQ)")
	fs.StringVar(&e.sqlitePath, "sqlite-path", os.Getenv("EVENTSOURCE_SQLITE_PATH"), "SQLite store file ($EVENTSOURCE_SQLITE_PATH)")
	fs.StringVar(&e.postgresURL, "postgres-url", os.Getenv("EVENTSOURCE_POSTGRES_URL"), "PostgreSQL store URL ($EVENTSOURCE_POSTGRES_URL)")
	// The usage text prints these defaults, before parse can register them.
	e.registerSecrets()
	return fs
}

// registerSecrets gives the output filter the passwords of the configured
// URLs and broker addresses.
func (e *env) registerSecrets() {
	for _, u := range []string{e.redisURL, e.amqpURL, e.kafkaBrokers, e.postgresURL} {
		e.secrets.addURL(u)
	}
}

// parse parses args, flags and positional arguments in any order, and
// registers the secrets of the configured URLs with the output filter.
func (e *env) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	defer e.registerSecrets() // also when parsing fails half way
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, &usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if e.output != "table" && e.output != "json" {
		return nil, usagef("-o must be table or json, got %q", e.output)
	}
	return pos, nil
}

// busKind picks the bus: -bus, or the only one configured.
func (e *env) busKind() (string, error) {
	if e.bus != "" {
		switch e.bus {
		case "redis", "rabbitmq", "kafka":
			return e.bus, nil
		}
		return "", usagef("-bus must be redis, rabbitmq or kafka, got %q", e.bus)
	}
	var set []string
	if e.redisURL != "" {
		set = append(set, "redis")
	}
	if e.amqpURL != "" {
		set = append(set, "rabbitmq")
	}
	if e.kafkaBrokers != "" {
		set = append(set, "kafka")
	}
	if len(set) == 1 {
		return set[0], nil
	}
	if len(set) == 0 {
		return "", usagef("no bus configured: set -bus and -redis-url, -amqp-url or -kafka-brokers (or their EVENTSOURCE_* variables)")
	}
	return "", usagef("-bus is required: %s are all configured", strings.Join(set, ", "))
}

func (e *env) groupList() []string {
	var out []string
	for g := range strings.SplitSeq(e.groups, ",") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}

// scrubber holds the secrets that must never be written.
type scrubber struct {
	mu      sync.Mutex
	secrets []string
}

// addURL registers the passwords of a URL, a comma-separated list of them
// (Kafka brokers), or a PostgreSQL keyword/value string: decoded, and as
// written, since client libraries echo the string they were given.
func (s *scrubber) addURL(raw string) {
	for part := range strings.SplitSeq(raw, ",") {
		part = strings.TrimSpace(part)
		_, rest, isURL := strings.Cut(part, "://")
		if !isURL {
			if strings.Contains(part, "=") {
				s.addKeywordPassword(raw)
				return // the whole string is one, commas included
			}
			continue
		}
		if u, err := url.Parse(part); err == nil && u.User != nil {
			if p, ok := u.User.Password(); ok && p != "" {
				s.add(p)
				s.add(url.QueryEscape(p))
				s.add(url.PathEscape(p))
			}
		}
		// As written: userinfo ends at the last "@" of the authority; a URL
		// that does not parse (a bad escape, a raw "/" in the password) is
		// cut at the last "@" of the whole string, which errs on the side
		// of hiding more.
		for _, authority := range []string{strings.SplitN(rest, "/", 2)[0], rest} {
			at := strings.LastIndex(authority, "@")
			if at < 0 {
				continue
			}
			if _, p, ok := strings.Cut(authority[:at], ":"); ok && p != "" {
				s.add(p)
				if dec, err := url.PathUnescape(p); err == nil {
					s.add(dec)
				}
			}
		}
	}
}

// addKeywordPassword registers the password of a keyword/value connection
// string ("host=db password='s e c' ..."), the form pgx also accepts.
func (s *scrubber) addKeywordPassword(dsn string) {
	rest := dsn
	for {
		rest = strings.TrimLeft(rest, " \t\n\r")
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			return
		}
		key := strings.TrimSpace(rest[:eq])
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var written, value string
		if strings.HasPrefix(rest, "'") {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '\''; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			written, value = rest[1:min(i, len(rest))], b.String()
			rest = rest[min(i+1, len(rest)):]
		} else {
			end := strings.IndexAny(rest, " \t\n\r")
			if end < 0 {
				end = len(rest)
			}
			written, value = rest[:end], rest[:end]
			rest = rest[end:]
		}
		if key == "password" && value != "" {
			// redact.URL, taking the string for a path, escapes the spaces.
			for _, v := range []string{value, written, url.PathEscape(value), url.PathEscape(written)} {
				s.add(v)
			}
		}
	}
}

func (s *scrubber) add(secret string) {
	if len(secret) < 3 { // a one- or two-letter password would mangle every line; it is no secret anyway
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.secrets, secret) { // registered at flag definition and again after parsing
		s.secrets = append(s.secrets, secret)
	}
}

func (s *scrubber) scrub(b []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.secrets) == 0 {
		return b
	}
	str := string(b)
	for _, sec := range s.secrets {
		str = strings.ReplaceAll(str, sec, "xxxxx")
	}
	return []byte(str)
}

// scrubWriter replaces secrets in everything written through it. Writers
// here get whole lines or whole documents, so a secret is never split
// across two writes.
type scrubWriter struct {
	mu sync.Mutex
	w  io.Writer
	s  *scrubber
}

func (w *scrubWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.w.Write(w.s.scrub(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func splitWords(s string) []string { return strings.Fields(s) }
func joinWords(w []string) string  { return strings.Join(w, " ") }
