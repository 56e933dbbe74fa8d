package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/eventsource-go/eventsource/internal/testenv"
)

// runMainVar makes the test binary run main (TestMain).
const runMainVar = "ORDERS_EXAMPLE_RUN_MAIN"

// startExample runs the example as a process in a directory of the test's
// own. It returns the lines of its standard output, and what Wait
// returned once it has exited; a process still running when the test ends
// is killed.
func startExample(t *testing.T, stderr io.Writer, args ...string) (*exec.Cmd, <-chan string, <-chan error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), runMainVar+"=1")
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait() // after the output is read, as StdoutPipe requires
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // an error if it has exited already
		for range lines {
		}
	})
	return cmd, lines, exited
}

// TestInterruptOnKafkaExitsPromptly: Ctrl-C while the walkthrough runs on
// Kafka ends the run at once, with a message and no stack trace, and the
// run's topics are deleted. The bus's deferred Close once waited for the
// consumer group's join in flight (about ten seconds on kfake), deaf to
// further Ctrl-Cs.
func TestInterruptOnKafkaExitsPromptly(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("os.Interrupt cannot be sent on Windows")
	}
	brokers := testenv.URL(t, "EVENTSOURCE_KAFKA_BROKERS", "set it to a Kafka broker (integration/cmd/kfake)")
	// Another member in the example's consumer group (one that died) that
	// does not rejoin: the run's join waits for it. The group is this
	// test's own, so no other run or test waits on it.
	group := "orders-interrupt-" + uuid.NewString()[:8]
	holdGroup(t, strings.Split(brokers, ","), group)
	var stderr bytes.Buffer
	cmd, lines, exited := startExample(t, &stderr, "-store", "memory", "-bus", "kafka", "-kafka-brokers", brokers, "-kafka-group", group)

	where := regexp.MustCompile(`^events are on Kafka topic "([^"]+)"`)
	var topic string
	timeout := time.After(time.Minute)
	for topic == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				<-exited // stderr is complete
				t.Fatalf("the example ended before naming its topic:\n%s", stderr.String())
			}
			if m := where.FindStringSubmatch(line); m != nil {
				topic = m[1]
			}
		case <-timeout:
			t.Fatal("the example did not name its topic within a minute")
		}
	}
	// Its consumer group is joining now: interrupt the walkthrough.
	interrupted := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines { // drain, so the example never blocks on its output
		}
	}()
	const limit = 5 * time.Second
	var err error
	select {
	case err = <-exited:
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-exited // stderr is complete
		t.Fatalf("the example still ran %s after Ctrl-C (killed):\n%s", limit, stderr.String())
	}
	t.Logf("exited %s after Ctrl-C: %v", time.Since(interrupted).Round(time.Millisecond), err)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1 (the run was cut short)", err)
	}
	if s := stderr.String(); !strings.Contains(s, "orders: ") || strings.Contains(s, "goroutine ") {
		t.Errorf("want one message and no stack trace on stderr:\n%s", s)
	}

	// The run deleted its topics (events, retry, dead letters) on its way out.
	conn, err := kafkago.Dial("tcp", strings.Split(brokers, ",")[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var left []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		parts, err := conn.ReadPartitions()
		if err != nil {
			t.Fatal(err)
		}
		left = left[:0]
		for _, p := range parts {
			if strings.HasPrefix(p.Topic, topic) {
				left = append(left, p.Topic)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("topics left on the broker after the run: %q", left)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, bounded by deadline
	}
}

// holdGroup joins group as a member that never heartbeats nor rejoins:
// another member's join then waits until its session ends, 10 seconds on
// (it then leaves the group by itself; a LeaveGroup would wait for that
// join too).
func holdGroup(t *testing.T, brokers []string, group string) {
	t.Helper()
	// A member left by an earlier run may hold up this join for its own
	// session.
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...)}
	req := &kafkago.JoinGroupRequest{GroupID: group, SessionTimeout: 10 * time.Second,
		RebalanceTimeout: 10 * time.Second, ProtocolType: "consumer",
		Protocols: []kafkago.GroupProtocol{{Name: "range",
			Metadata: kafkago.GroupProtocolSubscription{Topics: []string{"orders-example-held"}}}}}
	resp, err := client.JoinGroup(ctx, req)
	if err == nil && errors.Is(resp.Error, kafkago.MemberIDRequired) {
		req.MemberID = resp.MemberID // the broker names the member first
		resp, err = client.JoinGroup(ctx, req)
	}
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		t.Fatalf("joining group %s: %v", group, err)
	}
}
