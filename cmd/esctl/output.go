package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// writeJSON writes v as indented JSON, one document.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// table writes aligned columns; cells are cut to keep a row on one line.
type table struct {
	w    io.Writer
	rows [][]string
}

func newTable(w io.Writer, header ...string) *table { return &table{w: w, rows: [][]string{header}} }

func (t *table) row(cells ...any) {
	r := make([]string, len(cells))
	for i, c := range cells {
		s := fmt.Sprint(c)
		s = strings.ReplaceAll(strings.ReplaceAll(s, "\n", " "), "\t", " ")
		r[i] = cut(s, 60)
	}
	t.rows = append(t.rows, r)
}

func (t *table) flush() error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(t.w, b.String())
	return err
}

func cut(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// progress draws a bar on a terminal, redrawn at most every 100ms; on
// anything else it draws nothing, so that scripts read clean output.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	on    bool
	label string
	total int64
	done  int64
	last  time.Time
}

func newProgress(e *env, label string, total int64) *progress {
	return &progress{w: e.stdout, on: e.isTerminal && e.output == "table", label: label, total: total}
}

func (p *progress) set(done int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = done
	if !p.on || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.drawLocked()
}

func (p *progress) add(n int64) {
	p.mu.Lock()
	d := p.done + n
	p.mu.Unlock()
	p.set(d)
}

func (p *progress) drawLocked() {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = min(float64(p.done)/float64(p.total), 1)
	}
	fill := int(frac * width)
	fmt.Fprintf(p.w, "\r%s [%s%s] %d/%d", p.label, strings.Repeat("#", fill), strings.Repeat(".", width-fill), p.done, p.total)
}

// finish draws the final state and ends the line.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.on {
		return
	}
	p.drawLocked()
	fmt.Fprintln(p.w)
}
