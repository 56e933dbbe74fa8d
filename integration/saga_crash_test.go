package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/eventstore"
	"github.com/eventsource-go/eventsource/eventstore/postgres"
	"github.com/eventsource-go/eventsource/internal/testenv"
	"github.com/eventsource-go/eventsource/saga"
)

func init() {
	helpers["saga-crash"] = sagaCrashHelper
}

// The crash test's domain: a case is opened (with a deadline when Due is
// set), then bumped N = 0, 1, 2...; every bump sends a Ping, the deadline
// an Expire.
type (
	CaseOpened struct {
		Case string    `json:"case"`
		Due  time.Time `json:"due,omitzero"`
	}
	CaseBumped struct {
		Case string `json:"case"`
		N    int    `json:"n"`
	}
	CasePing struct {
		Case string `json:"case"`
		N    int    `json:"n"`
	}
	CaseExpire struct {
		Case string `json:"case"`
	}
)

func (CaseOpened) EventType() string   { return "CaseOpened" }
func (CaseBumped) EventType() string   { return "CaseBumped" }
func (CasePing) CommandType() string   { return "CasePing" }
func (CaseExpire) CommandType() string { return "CaseExpire" }

// caseState is an instance's state: Seen lists the bumps applied, in
// order, so a lost update (two deliveries from one loaded state) or a
// bump applied twice shows.
type caseState struct {
	Seen    []int `json:"seen"`
	Expired bool  `json:"expired"`
}

const sagaCrashName = "cases"

func caseSaga() *saga.Saga[caseState] {
	s := saga.New[caseState](sagaCrashName)
	saga.On(s, func(e CaseOpened) string { return e.Case },
		func(_ context.Context, sc *saga.Scope[caseState], e CaseOpened) error {
			if !e.Due.IsZero() {
				sc.ScheduleAt("expire", e.Due)
			}
			return nil
		}, saga.Starts())
	saga.On(s, func(e CaseBumped) string { return e.Case },
		func(_ context.Context, sc *saga.Scope[caseState], e CaseBumped) error {
			sc.State.Seen = append(sc.State.Seen, e.N)
			sc.Dispatch(CasePing{Case: e.Case, N: e.N})
			return nil
		})
	saga.OnDeadline(s, "expire", func(_ context.Context, sc *saga.Scope[caseState], _ saga.Deadline) error {
		sc.State.Expired = true
		sc.Dispatch(CaseExpire{Case: sc.ID()})
		return nil
	})
	return s
}

func caseRegistry() *eventsource.Registry {
	reg := eventsource.NewRegistry()
	eventsource.MustRegister[CaseOpened](reg)
	eventsource.MustRegister[CaseBumped](reg)
	return reg
}

// The effects' tables: every dispatch a process received, and the effect
// of each command, applied once per command ID (the idempotent command
// handler a saga's commands need).
const sagaEffectsSchema = `
CREATE TABLE IF NOT EXISTS case_dispatches (
	seq        BIGSERIAL PRIMARY KEY,
	command_id TEXT   NOT NULL,
	type       TEXT   NOT NULL,
	instance   TEXT   NOT NULL,
	n          INTEGER NOT NULL,
	owner      TEXT   NOT NULL,
	at_ms      BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS case_effects (
	command_id TEXT   PRIMARY KEY,
	type       TEXT   NOT NULL,
	instance   TEXT   NOT NULL,
	n          INTEGER NOT NULL,
	owner      TEXT   NOT NULL,
	at_ms      BIGINT NOT NULL
);`

// caseCommands records each dispatch, and applies its effect once per
// command ID.
func caseCommands(pool *pgxpool.Pool, owner string) *saga.Commands {
	record := func(ctx context.Context, typ, instance string, n int) error {
		id, _ := saga.CommandID(ctx)
		at := time.Now().UnixMilli()
		if _, err := pool.Exec(ctx, `INSERT INTO case_dispatches (command_id, type, instance, n, owner, at_ms)
			VALUES ($1, $2, $3, $4, $5, $6)`, id, typ, instance, n, owner, at); err != nil {
			return err
		}
		_, err := pool.Exec(ctx, `INSERT INTO case_effects (command_id, type, instance, n, owner, at_ms)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (command_id) DO NOTHING`, id, typ, instance, n, owner, at)
		return err
	}
	cmds := saga.NewCommands()
	saga.Handle(cmds, func(ctx context.Context, c CasePing) error { return record(ctx, "CasePing", c.Case, c.N) })
	saga.Handle(cmds, func(ctx context.Context, c CaseExpire) error { return record(ctx, "CaseExpire", c.Case, -1) })
	return cmds
}

// sagaCrashHelper runs the saga in this process, fed from the event store
// under a checkpoint of its own (so that both processes deliver every
// event, concurrently), and fires deadlines, until killed.
func sagaCrashHelper() int {
	ctx := context.Background()
	owner := os.Getenv("HELPER_OWNER")
	pool, err := openSchemaPool(ctx, os.Getenv("HELPER_PG_URL"), os.Getenv("HELPER_PG_SCHEMA"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Close()
	events := postgres.New(pool, caseRegistry())
	instances, err := saga.NewPostgresStore(ctx, pool)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	quiet := slog.New(slog.DiscardHandler)
	r := saga.NewRunner(caseSaga(), instances, caseCommands(pool, owner),
		saga.WithClaimHold(2*time.Second), saga.WithPollInterval(50*time.Millisecond), saga.WithLogger(quiet))
	go func() {
		if err := r.RunDeadlines(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}()
	f := &eventstore.Follower{Name: "cases-" + owner, Store: events, Checkpoints: events, Logger: quiet,
		RetryMin: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond}
	if err := r.Follow(ctx, f, 20*time.Millisecond); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// Two processes run one saga on a shared PostgreSQL, each delivering
// every event from the store (the harshest at-least-once: every event
// twice, concurrently). Events for many instances keep arriving; one
// process is killed with SIGKILL mid-stream. Then every instance's state
// holds each of its events exactly once (no lost update, no interleaving),
// each triggering event's command took effect exactly once (a repeated
// dispatch after the kill carries the same command ID), and the
// deadlines, due after the kill, fired once each, by the survivor.
func TestSagaTwoProcessesKill9(t *testing.T) {
	const (
		cases  = 30
		rounds = 30
		timers = 4
	)
	ctx := t.Context()
	url := postgresURL(t)
	schema := testenv.PostgresSchema(t, url, "it_")
	pool, err := openSchemaPool(ctx, url, schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, sagaEffectsSchema); err != nil {
		t.Fatal(err)
	}
	instances, err := saga.NewPostgresStore(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	events := postgres.New(pool, caseRegistry())
	appendOne := func(c string, e eventsource.Event) {
		t.Helper()
		env := eventsource.NewEnvelope(e)
		env.AggregateType, env.AggregateID = "Case", c
		if _, err := events.Append(ctx, eventsource.StreamID("Case", c), eventstore.AnyVersion, []eventsource.Envelope{env}); err != nil {
			t.Fatal(err)
		}
	}
	count := func(query string, args ...any) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, query, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	env := []string{"HELPER_PG_URL=" + url, "HELPER_PG_SCHEMA=" + schema}
	kill := map[string]func(){}
	for _, owner := range []string{"a", "b"} {
		kill[owner] = startHelper(t, helperCmd("saga-crash", append(slices.Clone(env), "HELPER_OWNER="+owner)...))
	}
	const victim, survivor = "a", "b"

	// Deadlines due well after the kill below, which comes within a few
	// seconds of the start.
	due := time.Now().Add(8 * time.Second)
	for i := range timers {
		appendOne("timer-"+strconv.Itoa(i), CaseOpened{Case: "timer-" + strconv.Itoa(i), Due: due})
	}
	caseName := func(i int) string { return "case-" + strconv.Itoa(i) }
	for i := range cases {
		appendOne(caseName(i), CaseOpened{Case: caseName(i)})
	}
	var killedAt time.Time
	for n := range rounds {
		for i := range cases {
			appendOne(caseName(i), CaseBumped{Case: caseName(i), N: n})
		}
		if n == rounds/3 {
			// Mid-stream: both processes are delivering.
			waitFor(t, 30*time.Second, "both processes to dispatch", func() bool {
				return count(`SELECT count(DISTINCT owner) FROM case_dispatches`) == 2
			})
			kill[victim]()
			killedAt = time.Now()
		}
	}
	if !killedAt.Before(due) {
		t.Fatalf("the kill came at %v, after the deadlines were due (%v): the machine is too slow for this test", killedAt, due)
	}

	want := cases*rounds + timers
	waitFor(t, 90*time.Second, "every command's effect", func() bool {
		return count(`SELECT count(*) FROM case_effects`) == want
	})

	// States: every bump once, in order per instance.
	wantSeen := make([]int, rounds)
	for n := range wantSeen {
		wantSeen[n] = n
	}
	for i := range cases {
		inst, err := instances.Load(ctx, sagaCrashName, caseName(i))
		if err != nil {
			t.Fatal(err)
		}
		var st caseState
		if err := json.Unmarshal(inst.State, &st); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(st.Seen, wantSeen) {
			t.Errorf("%s applied bumps %v, want each of 0..%d once, in order", caseName(i), st.Seen, rounds-1)
		}
		if len(inst.Outbox) != 0 {
			t.Errorf("%s has %d commands left in its outbox", caseName(i), len(inst.Outbox))
		}
	}

	// Effects: one per triggering event; a repeated dispatch is the same
	// command (same ID) of the same event.
	if n := count(`SELECT count(*) FROM (SELECT DISTINCT instance, n FROM case_effects WHERE type = 'CasePing') AS x`); n != cases*rounds {
		t.Errorf("%d distinct bumps took effect, want %d", n, cases*rounds)
	}
	if n := count(`SELECT count(*) FROM case_dispatches d JOIN case_effects e USING (command_id)
		WHERE d.instance <> e.instance OR d.n <> e.n OR d.type <> e.type`); n != 0 {
		t.Errorf("%d dispatches reused another command's ID", n)
	}
	repeats := count(`SELECT count(*) - count(DISTINCT command_id) FROM case_dispatches`)

	// Deadlines: each fired once, by the survivor, after the kill and
	// not before it was due.
	for i := range timers {
		c := "timer-" + strconv.Itoa(i)
		rows, err := pool.Query(ctx, `SELECT owner, at_ms FROM case_dispatches WHERE type = 'CaseExpire' AND instance = $1`, c)
		if err != nil {
			t.Fatal(err)
		}
		var fired []string
		for rows.Next() {
			var owner string
			var at int64
			if err := rows.Scan(&owner, &at); err != nil {
				t.Fatal(err)
			}
			fired = append(fired, owner)
			if at < due.UnixMilli() || at < killedAt.UnixMilli() {
				t.Errorf("%s's deadline fired at %v, before it was due (%v) or before the kill (%v)",
					c, time.UnixMilli(at), due, killedAt)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(fired, []string{survivor}) {
			t.Errorf("%s's deadline was dispatched by %v, want once by the survivor %q", c, fired, survivor)
		}
		inst, err := instances.Load(ctx, sagaCrashName, c)
		if err != nil {
			t.Fatal(err)
		}
		if len(inst.Deadlines) != 0 || len(inst.Outbox) != 0 {
			t.Errorf("%s still has deadlines %v and outbox %v", c, inst.Deadlines, inst.Outbox)
		}
	}
	t.Logf("%d events on %d instances, %d deadlines; %s killed %v before they were due; %d dispatches repeated (same command ID)",
		cases*(rounds+1)+timers, cases+timers, timers, victim, due.Sub(killedAt).Round(time.Millisecond), repeats)
}
