package otel_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/otel"
	"github.com/eventsource-go/eventsource/repository"
	"github.com/eventsource-go/eventsource/saga"
)

// Remind is the command the test saga dispatches.
type Remind struct{ Account string }

func (Remind) CommandType() string { return "OtelRemind" }

// TestSagaSpans: a saga fed by Follow handles each event in a consumer
// span under the save's trace, named after the runner, and each deadline
// it fires is a span whose ctx the dispatched command runs with.
func TestSagaSpans(t *testing.T) {
	tel, _, rec, _ := recording(t, true, false)
	s := saga.New[struct{}]("reminder")
	saga.On(s, func(Good) string { return "acct-1" }, func(_ context.Context, sc *saga.Scope[struct{}], _ Good) error {
		sc.Schedule("remind", time.Minute)
		return nil
	}, saga.Starts())
	saga.OnDeadline(s, "remind", func(_ context.Context, sc *saga.Scope[struct{}], _ saga.Deadline) error {
		sc.Dispatch(Remind{Account: sc.ID()})
		sc.End()
		return nil
	})
	var commandInTrace atomic.Bool
	cmds := saga.NewCommands()
	saga.Handle(cmds, func(ctx context.Context, _ Remind) error {
		commandInTrace.Store(spanNamedInCtx(ctx, rec, "deadline remind"))
		return nil
	})
	now := time.Now()
	runner := saga.NewRunner(s, saga.NewMemoryStore(), cmds, saga.WithClock(func() time.Time { return now }),
		saga.WithMiddleware(tel.SagaMiddleware("reminder")), saga.WithDeadlineObserver(tel.SagaDeadlines()))

	store := eventstore.NewMemory()
	repo := repository.New(store, nil, newAccount, repository.WithInstrumentation(tel.Repository()))
	a := newAccount()
	a.SetID("acct-1")
	a.Raise(Good{N: 1})
	if err := repo.Save(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runner.Follow(ctx, &eventstore.Follower{Name: "reminder", Store: store, Checkpoints: eventstore.NewMemoryCheckpoints()}, 10*time.Millisecond)
	}()
	waitUntil(t, "the saga's span", func() bool { return len(spansNamed(rec.Ended(), "process OtelGood")) == 1 })
	cancel()
	if err := <-done; err != nil && ctx.Err() == nil {
		t.Fatal(err)
	}
	save := spansNamed(rec.Ended(), "save OtelAccount")[0]
	proc := spansNamed(rec.Ended(), "process OtelGood")[0]
	if proc.Parent().SpanID() != save.SpanContext().SpanID() || attr(proc, otel.HandlerKey) != runner.HandlerName() {
		t.Errorf("saga span: parent %s (save %s), handler %q", proc.Parent().SpanID(), save.SpanContext().SpanID(), attr(proc, otel.HandlerKey))
	}

	now = now.Add(2 * time.Minute)
	if n, err := runner.FireDue(context.Background()); n != 1 || err != nil {
		t.Fatalf("FireDue = %d, %v; want 1 deadline", n, err)
	}
	deadlines := spansNamed(rec.Ended(), "deadline remind")
	if len(deadlines) != 1 || attr(deadlines[0], otel.SagaNameKey) != "reminder" || attr(deadlines[0], otel.SagaInstanceKey) != "acct-1" {
		t.Fatalf("deadline spans %v", deadlines)
	}
	if !commandInTrace.Load() {
		t.Error("the deadline's command did not run under the deadline's span")
	}
}

// spanNamedInCtx reports whether ctx's span is one that rec has seen
// start under name (it has not ended yet).
func spanNamedInCtx(ctx context.Context, rec *tracetest.SpanRecorder, name string) bool {
	id := trace.SpanContextFromContext(ctx).SpanID()
	for _, s := range rec.Started() {
		if s.Name() == name && s.SpanContext().SpanID() == id {
			return true
		}
	}
	return false
}
