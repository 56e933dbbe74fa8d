package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// tailFilter selects events of a tail.
type tailFilter struct {
	types     []string
	aggregate string
}

func (f tailFilter) match(ev rawEvent) bool {
	if len(f.types) > 0 && !slices.Contains(f.types, ev.Type) {
		return false
	}
	if f.aggregate != "" && ev.AggregateID != f.aggregate && ev.AggregateType+"-"+ev.AggregateID != f.aggregate {
		return false
	}
	return true
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func cmdTail(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("[-type T,...] [-aggregate ID] [-n N] [-for D]")
	types := fs.String("type", "", "only these event types, comma-separated")
	aggregate := fs.String("aggregate", "", "only this aggregate: an ID, or Type-ID")
	count := fs.Int("n", 0, "stop after this many events (0: until interrupted)")
	dur := fs.Duration("for", 0, "stop after this long (0: until interrupted)")
	if pos, err := e.parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	f := tailFilter{types: splitList(*types), aggregate: *aggregate}
	b, err := openBroker(ctx, e)
	if err != nil {
		return err
	}
	defer b.close()
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	seen := 0
	var werr error
	err = b.tail(ctx, func() {
		fmt.Fprintf(e.stderr, "esctl: tailing %s (Ctrl-C to stop)\n", b.where())
	}, func(ev rawEvent) {
		if !f.match(ev) || werr != nil {
			return
		}
		if werr = writeEvent(e, ev); werr != nil {
			stop()
			return
		}
		seen++
		if *count > 0 && seen >= *count {
			stop()
		}
	})
	if werr != nil {
		return werr
	}
	return err
}

// writeEvent prints one event: a JSON line, or a readable line.
func writeEvent(e *env, ev rawEvent) error {
	if e.output == "json" {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = e.stdout.Write(append(b, '\n'))
		return err
	}
	data := string(ev.Data)
	if len(data) > 160 {
		data = data[:159] + "…"
	}
	at := ev.OccurredAt.Local().Format(time.TimeOnly + ".000")
	if ev.OccurredAt.IsZero() {
		at = "--:--:--.---"
	}
	_, err := fmt.Fprintf(e.stdout, "%s %-24s %s-%s v%d %s\n", at, ev.Type, ev.AggregateType, ev.AggregateID, ev.Version, data)
	return err
}

func cmdBusStats(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("")
	if pos, err := e.parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return withBroker(ctx, e, func(ctx context.Context, b broker) error {
		rows, err := allStats(ctx, e, b)
		if err != nil {
			return err
		}
		if e.output == "json" {
			return writeJSON(e.stdout, rows)
		}
		fmt.Fprintln(e.stdout, b.where())
		t := newTable(e.stdout, "GROUP", "EVENTS", "BACKLOG", "PENDING", "RETRYING", "CONSUMERS", "DEAD LETTERS")
		for _, r := range rows {
			t.row(r.Group, num(r.Events), num(r.Backlog), num(r.Pending), num(r.Retrying), num(r.Consumers), r.DeadLetters)
		}
		return t.flush()
	})
}

func allStats(ctx context.Context, e *env, b broker) ([]groupStats, error) {
	groups, err := resolveGroups(ctx, e, b)
	if err != nil {
		return nil, err
	}
	rows := []groupStats{}
	for _, g := range groups {
		st, err := b.stats(ctx, g)
		if err != nil {
			return nil, fmt.Errorf("group %q: %w", g, err)
		}
		rows = append(rows, st)
	}
	return rows, nil
}

// num prints -1 (not known on this broker) as a dash.
func num(n int64) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprint(n)
}
