package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// kind is how testkit finds and starts one server.
type kind struct {
	server   Server
	urlVar   string // EVENTSOURCE_REDIS_URL
	imageVar string // EVENTSOURCE_REDIS_IMAGE
	image    string // the default image
	port     int    // the port the server listens on in the container
	example  string // an example value of urlVar, for the skip message
	// samePort publishes the server on the same port on the host as in the
	// container, chosen free on the host, because clients are told the
	// address to use (Kafka's advertised listener). port is then ignored.
	samePort bool
	env      func(host string, port int) map[string]string
	url      func(host string, port int) string
	ready    func(ctx context.Context, url string) error
}

func (k kind) imageFor(o options) string {
	if o.image != "" {
		return o.image
	}
	if v := os.Getenv(k.imageVar); v != "" {
		return v
	}
	return k.image
}

var kinds = map[Server]kind{
	ServerRedis: {
		server: ServerRedis, urlVar: "EVENTSOURCE_REDIS_URL", imageVar: "EVENTSOURCE_REDIS_IMAGE",
		image: "redis:7-alpine", port: 6379, example: "redis://127.0.0.1:6379/0",
		url: func(host string, port int) string { return "redis://" + hostPort(host, port) + "/0" },
		ready: func(ctx context.Context, u string) error {
			opts, err := goredis.ParseURL(u)
			if err != nil {
				return err
			}
			c := goredis.NewClient(opts)
			defer c.Close()
			return c.Ping(ctx).Err()
		},
	},
	ServerRabbitMQ: {
		server: ServerRabbitMQ, urlVar: "EVENTSOURCE_AMQP_URL", imageVar: "EVENTSOURCE_RABBITMQ_IMAGE",
		image: "rabbitmq:3.13-alpine", port: 5672, example: "amqp://guest:guest@127.0.0.1:5672/",
		env: func(string, int) map[string]string {
			return map[string]string{"RABBITMQ_DEFAULT_USER": "guest", "RABBITMQ_DEFAULT_PASS": "guest"}
		},
		url: func(host string, port int) string { return "amqp://guest:guest@" + hostPort(host, port) + "/" },
		ready: func(ctx context.Context, u string) error {
			c, err := amqp.DialConfig(u, amqp.Config{Dial: func(network, addr string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}})
			if err != nil {
				return err
			}
			return c.Close()
		},
	},
	ServerKafka: {
		server: ServerKafka, urlVar: "EVENTSOURCE_KAFKA_BROKERS", imageVar: "EVENTSOURCE_KAFKA_IMAGE",
		image: "apache/kafka:3.9.0", example: "127.0.0.1:9092", samePort: true,
		// Apache Kafka's image, configured as a single KRaft node that
		// advertises the published port.
		env: func(host string, port int) map[string]string {
			return map[string]string{
				"KAFKA_NODE_ID":                                  "1",
				"KAFKA_PROCESS_ROLES":                            "broker,controller",
				"KAFKA_LISTENERS":                                "PLAINTEXT://:" + strconv.Itoa(port) + ",CONTROLLER://:9093",
				"KAFKA_ADVERTISED_LISTENERS":                     "PLAINTEXT://" + hostPort(host, port),
				"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
				"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":           "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
				"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@localhost:9093",
				"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
				"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
				"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
				"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":         "0",
				// Tests use short group sessions; Kafka refuses below 6s by default.
				"KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "500",
			}
		},
		url: func(host string, port int) string { return hostPort(host, port) },
		ready: func(ctx context.Context, brokers string) error {
			conn, err := (&kafkago.Dialer{}).DialContext(ctx, "tcp", brokers)
			if err != nil {
				return err
			}
			defer conn.Close()
			_, err = conn.Brokers()
			return err
		},
	},
	ServerPostgres: {
		server: ServerPostgres, urlVar: "EVENTSOURCE_POSTGRES_URL", imageVar: "EVENTSOURCE_POSTGRES_IMAGE",
		image: "postgres:16-alpine", port: 5432, example: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
		env: func(string, int) map[string]string {
			return map[string]string{"POSTGRES_USER": "postgres", "POSTGRES_DB": "test", "POSTGRES_HOST_AUTH_METHOD": "trust"}
		},
		url: func(host string, port int) string {
			return "postgres://postgres@" + hostPort(host, port) + "/test?sslmode=disable"
		},
		ready: func(ctx context.Context, u string) error {
			c, err := pgx.Connect(ctx, u)
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			_, err = c.Exec(ctx, "select 1")
			return err
		},
	},
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// howTo says how to enable a server that is not available.
func (k kind) howTo() string {
	return fmt.Sprintf("set %s (e.g. %s), or start Docker so that testkit runs %s in a container (image %s, or %s)",
		k.urlVar, k.example, k.server, k.image, k.imageVar)
}

// startContainer starts the server in a container and waits until it
// answers. A container that was created is removed whenever starting it
// fails.
func startContainer(ctx context.Context, k kind, o options) (*Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	pingCtx, cancelPing := context.WithTimeout(ctx, 2*time.Second)
	err := dockerPing(pingCtx)
	cancelPing()
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not set and no Docker engine answered (%v); %s",
			ErrUnavailable, k.urlVar, err, k.howTo())
	}
	image := k.imageFor(o)
	fail := func(err error) error {
		return fmt.Errorf("%s is not set and starting a %s container (image %s) failed: %w; %s",
			k.urlVar, k.server, image, err, k.howTo())
	}
	host, err := daemonHost(ctx)
	if err != nil {
		return nil, fail(err)
	}
	// With a port chosen on the host, another process may take it before
	// the container binds it: try a few.
	for attempt := 1; ; attempt++ {
		port := k.port
		if k.samePort {
			if port, err = freePort(); err != nil {
				return nil, fail(err)
			}
		}
		inst, err := runOnce(ctx, k, image, host, port)
		if err == nil {
			return inst, nil
		}
		if k.samePort && attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		return nil, fail(err)
	}
}

func runOnce(ctx context.Context, k kind, image, host string, port int) (*Instance, error) {
	p := strconv.Itoa(port) + "/tcp"
	customs := []testcontainers.ContainerCustomizer{
		testcontainers.WithExposedPorts(p),
		testcontainers.WithLabels(map[string]string{"io.eventsource.testkit": string(k.server)}),
		// Ports published through a proxy accept connections before the
		// server listens: readiness is the server answering its own
		// protocol (below), not the port.
		testcontainers.WithWaitStrategy(wait.ForListeningPort(p).SkipInternalCheck()),
	}
	if k.env != nil {
		customs = append(customs, testcontainers.WithEnv(k.env(host, port)))
	}
	if k.samePort {
		customs = append(customs, testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{network.MustParsePort(p): {{HostPort: strconv.Itoa(port)}}}
		}))
	}
	ctr, err := testcontainers.Run(ctx, image, customs...)
	if err != nil {
		// Run returns the container it created alongside the error.
		if ctr != nil {
			logs := containerLogs(context.Background(), ctr)
			if rmErr := testcontainers.TerminateContainer(ctr); rmErr != nil {
				err = errors.Join(err, fmt.Errorf("and removing it: %w", rmErr))
			}
			if logs != "" {
				err = fmt.Errorf("%w\ncontainer output:\n%s", err, logs)
			}
		}
		return nil, err
	}
	inst := &Instance{ctr: ctr}
	if err := func() error {
		h, err := ctr.Host(ctx)
		if err != nil {
			return err
		}
		mapped, err := ctr.MappedPort(ctx, p)
		if err != nil {
			return err
		}
		inst.Service = Service{Server: k.server, URL: k.url(h, int(mapped.Num())),
			Source: "container " + image + " " + shortID(ctr.GetContainerID())}
		return waitReady(ctx, k, inst.URL)
	}(); err != nil {
		logs := containerLogs(context.Background(), ctr)
		if rmErr := testcontainers.TerminateContainer(ctr); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("and removing it: %w", rmErr))
		}
		return nil, fmt.Errorf("%w\ncontainer output:\n%s", err, logs)
	}
	return inst, nil
}

// waitReady asks the server until it answers, or ctx ends.
func waitReady(ctx context.Context, k kind, u string) error {
	var last error
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = k.ready(attemptCtx, u)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer before the start timeout: %w", k.server, last)
		case <-time.After(100 * time.Millisecond): // polling interval, bounded by ctx
		}
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// daemonHost is where the containers' published ports are reached
// (TESTCONTAINERS_HOST_OVERRIDE, else from the Docker host).
func daemonHost(ctx context.Context) (string, error) {
	if h := os.Getenv("TESTCONTAINERS_HOST_OVERRIDE"); h != "" {
		return h, nil
	}
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return "", err
	}
	defer p.Close()
	return p.DaemonHost(ctx)
}

// dockerPing asks the Docker engine for /_ping, giving up when ctx ends:
// testcontainers' own discovery retries for much longer than a test run
// without Docker should wait. A DOCKER_HOST scheme it cannot probe (ssh,
// npipe) is left to testcontainers.
func dockerPing(ctx context.Context) error {
	var hosts []string
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		hosts = []string{h}
	} else {
		hosts = []string{"unix:///var/run/docker.sock"}
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			hosts = append(hosts, "unix://"+filepath.Join(d, "docker.sock"))
		}
		if home, err := os.UserHomeDir(); err == nil {
			hosts = append(hosts, "unix://"+filepath.Join(home, ".docker", "run", "docker.sock"))
		}
	}
	var errs []string
	for _, host := range hosts {
		err := pingHost(ctx, host)
		if err == nil || errors.Is(err, errNotProbed) {
			return nil
		}
		errs = append(errs, err.Error())
	}
	return errors.New(strings.Join(errs, "; "))
}

var errNotProbed = errors.New("not probed")

func pingHost(ctx context.Context, host string) error {
	u, err := url.Parse(host)
	if err != nil {
		return err
	}
	var dial func(ctx context.Context, _, _ string) (net.Conn, error)
	switch u.Scheme {
	case "unix":
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", u.Path)
		}
	case "tcp":
		if os.Getenv("DOCKER_TLS_VERIFY") != "" {
			return errNotProbed
		}
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", u.Host)
		}
	default:
		return errNotProbed
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dial}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: /_ping: %s", host, resp.Status)
	}
	return nil
}
