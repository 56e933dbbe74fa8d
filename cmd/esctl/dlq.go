package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/eventsource-go/eventsource"
	"github.com/eventsource-go/eventsource/bus/consumer"
)

// filter selects dead letters; empty fields match everything.
type filter struct {
	reason, typ, handler, aggregate string
}

func (f *filter) register(fs *flag.FlagSet) {
	fs.StringVar(&f.reason, "reason", "", "only this reason (max_retries, permanent, malformed, unknown_type, ...)")
	fs.StringVar(&f.typ, "type", "", "only this event type")
	fs.StringVar(&f.handler, "handler", "", "only records naming this handler")
	fs.StringVar(&f.aggregate, "aggregate", "", "only this aggregate ID")
}

func (f filter) empty() bool { return f == filter{} }

func (f filter) match(r consumer.DeadLetter) bool {
	return (f.reason == "" || string(r.Reason) == f.reason) &&
		(f.typ == "" || r.EventType == f.typ) &&
		(f.handler == "" || slices.Contains(r.Handlers, f.handler)) &&
		(f.aggregate == "" || r.AggregateID == f.aggregate)
}

// deadLetterJSON is a record as -o json prints it: the body as JSON when
// it decodes, as text otherwise.
type deadLetterJSON struct {
	ID            string          `json:"id"`
	Group         string          `json:"group"`
	Reason        string          `json:"reason"`
	Error         string          `json:"error"`
	Attempts      int             `json:"attempts"`
	Handlers      []string        `json:"handlers"`
	Time          time.Time       `json:"time"`
	EventID       string          `json:"event_id,omitempty"`
	EventType     string          `json:"event_type,omitempty"`
	AggregateType string          `json:"aggregate_type,omitempty"`
	AggregateID   string          `json:"aggregate_id,omitempty"`
	Version       int64           `json:"version,omitempty"`
	Source        string          `json:"source,omitempty"`
	SourceID      string          `json:"source_id,omitempty"`
	BodyDropped   bool            `json:"body_dropped,omitempty"`
	Size          int             `json:"size,omitempty"`
	Envelope      json.RawMessage `json:"envelope,omitempty"` // the original bytes, when they are JSON
	Body          string          `json:"body,omitempty"`     // the original bytes otherwise
}

func toJSON(group string, r consumer.DeadLetter, withBody bool) deadLetterJSON {
	if r.Group != "" {
		group = r.Group
	}
	out := deadLetterJSON{
		ID: r.ID, Group: group, Reason: string(r.Reason), Error: r.Error, Attempts: r.Attempts,
		Handlers: r.Handlers, Time: r.Time, EventID: r.EventID, EventType: r.EventType,
		AggregateType: r.AggregateType, AggregateID: r.AggregateID, Version: r.Version,
		Source: r.Source, SourceID: r.SourceID, BodyDropped: r.BodyDropped, Size: r.Size,
	}
	if out.Handlers == nil {
		out.Handlers = []string{}
	}
	if withBody && len(r.Body) > 0 {
		if json.Valid(r.Body) {
			out.Envelope = json.RawMessage(r.Body)
		} else {
			out.Body = string(r.Body)
		}
	}
	return out
}

// grouped is one dead letter and the group it belongs to.
type grouped struct {
	group string
	rec   consumer.DeadLetter
}

// listPage is how many records one List call asks for.
const listPage = 500

// listAll returns up to limit records of one group that match f.
func listAll(ctx context.Context, adm consumer.Admin, f filter, limit int) ([]consumer.DeadLetter, error) {
	var out []consumer.DeadLetter
	after := ""
	for len(out) < limit {
		recs, err := adm.List(ctx, after, listPage)
		if err != nil {
			return out, err
		}
		for _, r := range recs {
			if f.match(r) && len(out) < limit {
				out = append(out, r)
			}
		}
		if len(recs) < listPage {
			break
		}
		after = recs[len(recs)-1].ID
	}
	return out, nil
}

// collect lists the matching records of every selected group.
func collect(ctx context.Context, e *env, b broker, f filter, limit int) ([]grouped, error) {
	groups, err := resolveGroups(ctx, e, b)
	if err != nil {
		return nil, err
	}
	var out []grouped
	for _, g := range groups {
		adm, err := b.admin(ctx, g)
		if err != nil {
			return nil, err
		}
		recs, err := listAll(ctx, adm, f, limit-len(out))
		if err != nil {
			return nil, fmt.Errorf("group %q: %w", g, err)
		}
		for _, r := range recs {
			out = append(out, grouped{g, r})
		}
	}
	return out, nil
}

// withBroker opens the bus, runs fn, and closes it.
func withBroker(ctx context.Context, e *env, fn func(ctx context.Context, b broker) error) error {
	b, err := openBroker(ctx, e)
	if err != nil {
		return err
	}
	defer b.close()
	return fn(ctx, b)
}

func cmdDLQList(ctx context.Context, e *env, args []string) error {
	var f filter
	fs := e.flagSet("[-reason R] [-type T] [-handler H] [-aggregate ID] [-limit N]")
	f.register(fs)
	limit := fs.Int("limit", 1000, "at most this many records")
	if pos, err := e.parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return withBroker(ctx, e, func(ctx context.Context, b broker) error {
		recs, err := collect(ctx, e, b, f, *limit)
		if err != nil {
			return err
		}
		if e.output == "json" {
			out := make([]deadLetterJSON, len(recs))
			for i, r := range recs {
				out[i] = toJSON(r.group, r.rec, false)
			}
			return writeJSON(e.stdout, out)
		}
		t := newTable(e.stdout, "GROUP", "ID", "TIME", "REASON", "TYPE", "AGGREGATE", "ATTEMPTS", "HANDLERS", "ERROR")
		for _, r := range recs {
			t.row(r.group, r.rec.ID, r.rec.Time.Format(time.DateTime), r.rec.Reason, orDash(r.rec.EventType),
				orDash(strings.TrimPrefix(r.rec.AggregateType+"-"+r.rec.AggregateID, "-")), r.rec.Attempts,
				orDash(strings.Join(r.rec.Handlers, ",")), r.rec.Error)
		}
		if err := t.flush(); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "%d dead letter(s) on %s\n", len(recs), b.where())
		return nil
	})
}

func cmdDLQCount(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("")
	if pos, err := e.parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return withBroker(ctx, e, func(ctx context.Context, b broker) error {
		groups, err := resolveGroups(ctx, e, b)
		if err != nil {
			return err
		}
		type row struct {
			Group string `json:"group"`
			Count int64  `json:"count"`
		}
		var rows []row
		for _, g := range groups {
			adm, err := b.admin(ctx, g)
			if err != nil {
				return err
			}
			n, err := adm.Count(ctx)
			if err != nil {
				return fmt.Errorf("group %q: %w", g, err)
			}
			rows = append(rows, row{g, n})
		}
		if e.output == "json" {
			return writeJSON(e.stdout, rows)
		}
		t := newTable(e.stdout, "GROUP", "DEAD LETTERS")
		for _, r := range rows {
			t.row(r.Group, r.Count)
		}
		return t.flush()
	})
}

// find returns the record with this ID in the selected groups.
func find(ctx context.Context, e *env, b broker, id string) (grouped, error) {
	recs, err := withIDs(ctx, e, b, []string{id})
	if err != nil {
		return grouped{}, err
	}
	return byID(recs, id)
}

// findIDs returns the records of one group with these IDs. It keeps only
// those and reads no further than the last: a queue can hold millions.
func findIDs(ctx context.Context, adm consumer.Admin, ids []string) ([]consumer.DeadLetter, error) {
	left := map[string]bool{}
	for _, id := range ids {
		left[id] = true
	}
	var out []consumer.DeadLetter
	after := ""
	for len(left) > 0 {
		recs, err := adm.List(ctx, after, listPage)
		if err != nil {
			return out, err
		}
		for _, r := range recs {
			if left[r.ID] { // an ID is unique within a group
				out = append(out, r)
				delete(left, r.ID)
			}
		}
		if len(recs) < listPage {
			break
		}
		after = recs[len(recs)-1].ID
	}
	return out, nil
}

// withIDs returns the records with these IDs in every selected group.
func withIDs(ctx context.Context, e *env, b broker, ids []string) ([]grouped, error) {
	groups, err := resolveGroups(ctx, e, b)
	if err != nil {
		return nil, err
	}
	var out []grouped
	for _, g := range groups {
		adm, err := b.admin(ctx, g)
		if err != nil {
			return nil, err
		}
		recs, err := findIDs(ctx, adm, ids)
		if err != nil {
			return nil, fmt.Errorf("group %q: %w", g, err)
		}
		for _, r := range recs {
			out = append(out, grouped{g, r})
		}
	}
	return out, nil
}

// byID picks the record with this ID. IDs are unique within one group's
// dead letters only (Redis stream IDs are times), so an ID found in
// several groups is refused rather than taken from the first.
func byID(recs []grouped, id string) (grouped, error) {
	var found []grouped
	for _, r := range recs {
		if r.rec.ID == id {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 0:
		return grouped{}, fmt.Errorf("dead letter %s: %w", id, eventsource.ErrNotFound)
	case 1:
		return found[0], nil
	}
	groups := make([]string, len(found))
	for i, r := range found {
		groups[i] = r.group
	}
	return grouped{}, fmt.Errorf("dead letter %s is in groups %s: say which with -group", id, strings.Join(groups, ", "))
}

func cmdDLQShow(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("ID")
	pos, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("one dead-letter ID is required (see esctl dlq list)")
	}
	return withBroker(ctx, e, func(ctx context.Context, b broker) error {
		r, err := find(ctx, e, b, pos[0])
		if err != nil {
			return err
		}
		if e.output == "json" {
			return writeJSON(e.stdout, toJSON(r.group, r.rec, true))
		}
		rec := r.rec
		w := e.stdout
		fmt.Fprintf(w, "id:          %s\ngroup:       %s\ntime:        %s\nreason:      %s\nattempts:    %d\nhandlers:    %s\n",
			rec.ID, r.group, rec.Time.Format(time.RFC3339Nano), rec.Reason, rec.Attempts, orDash(strings.Join(rec.Handlers, ", ")))
		fmt.Fprintf(w, "error:       %s\n", orDash(rec.Error))
		fmt.Fprintf(w, "event:       %s %s (aggregate %s %s, version %d)\n",
			orDash(rec.EventType), orDash(rec.EventID), orDash(rec.AggregateType), orDash(rec.AggregateID), rec.Version)
		fmt.Fprintf(w, "source:      %s %s\n", orDash(rec.Source), rec.SourceID)
		switch {
		case rec.BodyDropped:
			fmt.Fprintf(w, "body:        dropped by the broker (%d bytes); the original is at the source above\n", rec.Size)
		case len(rec.Body) == 0:
			fmt.Fprintf(w, "body:        (empty)\n")
		default:
			if ev, err := decodeEnvelope(rec.Body); err == nil {
				b, _ := json.MarshalIndent(ev, "             ", "  ")
				fmt.Fprintf(w, "envelope:    %s\n", b)
			} else {
				fmt.Fprintf(w, "body:        does not decode (%v); %d bytes:\n%q\n", err, len(rec.Body), rec.Body)
			}
		}
		return nil
	})
}

func cmdDLQReplay(ctx context.Context, e *env, args []string) error {
	var f filter
	fs := e.flagSet("ID... | -all | [-reason R] [-type T] [-handler H] [-aggregate ID]")
	f.register(fs)
	all := fs.Bool("all", false, "replay every record of the selected groups")
	ids, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(ids) > 0 && (*all || !f.empty()):
		return usagef("give IDs, or -all, or filters, not several")
	case len(ids) == 0 && !*all && f.empty():
		return usagef("say what to replay: IDs, -all, or filters (-reason, -type, -handler, -aggregate)")
	case *all && !f.empty():
		return usagef("-all replays everything; drop it to replay by filter")
	}
	return withBroker(ctx, e, func(ctx context.Context, b broker) error {
		var done []deadLetterJSON
		var targets []grouped
		if *all {
			return replayAll(ctx, e, b)
		}
		if len(ids) > 0 {
			recs, err := withIDs(ctx, e, b, ids)
			if err != nil {
				return err
			}
			for _, id := range ids {
				t, err := byID(recs, id)
				if err != nil {
					return err
				}
				if r := t.rec; r.BodyDropped { // before any replay, so that none is half done
					return fmt.Errorf("dead letter %s: %w (the broker dropped its %d bytes; the original is at %s %s)",
						id, consumer.ErrBodyDropped, r.Size, orDash(r.Source), r.SourceID)
				}
				targets = append(targets, t)
			}
		} else {
			if targets, err = collect(ctx, e, b, f, 1<<30); err != nil {
				return err
			}
			// The admin API refuses them; a filter is not a request for them.
			var skipped []string
			targets = slices.DeleteFunc(targets, func(t grouped) bool {
				if t.rec.BodyDropped {
					skipped = append(skipped, t.rec.ID)
				}
				return t.rec.BodyDropped
			})
			if len(skipped) > 0 {
				fmt.Fprintf(e.stderr, "skipped %d dead letter(s) without their body (see esctl dlq show ID): %s\n",
					len(skipped), strings.Join(skipped, ", "))
			}
		}
		bar := newProgress(e, "replaying", int64(len(targets)))
		for _, t := range targets {
			adm, err := b.admin(ctx, t.group)
			if err != nil {
				return err
			}
			if err := adm.Replay(ctx, t.rec.ID); err != nil {
				bar.finish()
				return fmt.Errorf("replayed %d of %d, then: %w", len(done), len(targets), err)
			}
			done = append(done, toJSON(t.group, t.rec, false))
			bar.add(1)
		}
		bar.finish()
		return report(e, "replayed", done)
	})
}

// replayAll replays every record of each group with the admin API's
// ReplayAll (one pass, only what is there when it starts); the bar
// follows the count going down.
func replayAll(ctx context.Context, e *env, b broker) error {
	groups, err := resolveGroups(ctx, e, b)
	if err != nil {
		return err
	}
	type row struct {
		Group    string `json:"group"`
		Replayed int    `json:"replayed"`
		Skipped  int    `json:"skipped"` // records without their body, which stay
	}
	var rows []row
	for _, g := range groups {
		adm, err := b.admin(ctx, g)
		if err != nil {
			return err
		}
		total, err := adm.Count(ctx)
		if err != nil {
			return fmt.Errorf("group %q: %w", g, err)
		}
		bar := newProgress(e, "replaying "+g, total)
		stop := watchCount(ctx, adm, total, bar)
		n, err := adm.ReplayAll(ctx)
		stop()
		bar.set(int64(n))
		bar.finish()
		if err != nil {
			return fmt.Errorf("group %q: replayed %d, then: %w", g, n, err)
		}
		skipped := 0
		if int64(n) < total { // only then can ReplayAll have left some
			left, err := listAll(ctx, adm, filter{}, 1<<30)
			if err != nil {
				return fmt.Errorf("group %q: replayed %d, then: %w", g, n, err)
			}
			for _, r := range left {
				if r.BodyDropped {
					skipped++
				}
			}
		}
		rows = append(rows, row{g, n, skipped})
	}
	if e.output == "json" {
		return writeJSON(e.stdout, rows)
	}
	t := newTable(e.stdout, "GROUP", "REPLAYED", "SKIPPED")
	for _, r := range rows {
		t.row(r.Group, r.Replayed, r.Skipped)
	}
	return t.flush()
}

// watchCount moves bar as the dead letters go, while a call that reports
// only at its end runs.
func watchCount(ctx context.Context, adm consumer.Admin, total int64, bar *progress) (stop func()) {
	if !bar.on {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if n, err := adm.Count(ctx); err == nil {
					bar.set(max(total-n, 0))
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

func report(e *env, verb string, recs []deadLetterJSON) error {
	if e.output == "json" {
		if recs == nil {
			recs = []deadLetterJSON{}
		}
		return writeJSON(e.stdout, map[string]any{verb: recs, "count": len(recs)})
	}
	t := newTable(e.stdout, "GROUP", "ID", "REASON", "TYPE", "AGGREGATE")
	for _, r := range recs {
		t.row(r.Group, r.ID, r.Reason, orDash(r.EventType), orDash(r.AggregateID))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "%s %d dead letter(s)\n", verb, len(recs))
	return nil
}

func cmdDLQPurge(ctx context.Context, e *env, args []string) error {
	var f filter
	fs := e.flagSet("-all | [-reason R] [-type T] [-handler H] [-aggregate ID] | ID...")
	f.register(fs)
	all := fs.Bool("all", false, "purge every record of the selected groups")
	ids, err := e.parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(ids) == 0 && !*all && f.empty():
		return usagef("say what to purge: -all, filters (-reason, -type, -handler, -aggregate) or IDs")
	case *all && (!f.empty() || len(ids) > 0):
		return usagef("-all purges everything; drop it to purge by filter or ID")
	case len(ids) > 0 && !f.empty():
		return usagef("give IDs or filters, not both")
	}
	return withBroker(ctx, e, func(ctx context.Context, b broker) error {
		if *all {
			groups, err := resolveGroups(ctx, e, b)
			if err != nil {
				return err
			}
			type row struct {
				Group  string `json:"group"`
				Purged int64  `json:"purged"`
			}
			var rows []row
			for _, g := range groups {
				adm, err := b.admin(ctx, g)
				if err != nil {
					return err
				}
				n, err := adm.Purge(ctx)
				if err != nil {
					return fmt.Errorf("group %q: %w", g, err)
				}
				rows = append(rows, row{g, n})
			}
			if e.output == "json" {
				return writeJSON(e.stdout, rows)
			}
			t := newTable(e.stdout, "GROUP", "PURGED")
			for _, r := range rows {
				t.row(r.Group, r.Purged)
			}
			return t.flush()
		}
		var recs []grouped
		if len(ids) > 0 {
			recs, err = withIDs(ctx, e, b, ids)
		} else {
			recs, err = collect(ctx, e, b, f, 1<<30)
		}
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			var sel []grouped
			for _, id := range ids {
				r, err := byID(recs, id)
				if err != nil {
					return err
				}
				sel = append(sel, r)
			}
			recs = sel
		}
		byGroup := map[string][]consumer.DeadLetter{}
		var order []string
		for _, r := range recs {
			if _, ok := byGroup[r.group]; !ok {
				order = append(order, r.group)
			}
			byGroup[r.group] = append(byGroup[r.group], r.rec)
		}
		var done []deadLetterJSON
		for _, g := range order {
			n, err := b.remove(ctx, g, byGroup[g])
			if err != nil {
				return err
			}
			if n != len(byGroup[g]) {
				return fmt.Errorf("group %q: purged %d of %d (the others were replayed or purged meanwhile)", g, n, len(byGroup[g]))
			}
			for _, r := range byGroup[g] {
				done = append(done, toJSON(g, r, false))
			}
		}
		return report(e, "purged", done)
	})
}
