package main

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

//go:embed web
var webFS embed.FS

// tokenHeader carries the console token on every API request. A custom
// header also makes every state-changing request CSRF-safe: a page of
// another origin cannot send it without a CORS preflight, which the
// console never grants.
const tokenHeader = "X-Esctl-Token"

func cmdConsole(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("[-listen 127.0.0.1:8080] [-token T]")
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve on; anything but loopback requires -token")
	token := fs.String("token", getenv("EVENTSOURCE_CONSOLE_TOKEN", ""), "token that API requests must carry ($EVENTSOURCE_CONSOLE_TOKEN); required off loopback")
	e.secrets.add(getenv("EVENTSOURCE_CONSOLE_TOKEN", "")) // the usage text prints the default
	if pos, err := e.parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	e.secrets.add(*token)
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return usagef("-listen %q: %v", *listen, err)
	}
	loopback := isLoopback(host)
	if !loopback && *token == "" {
		return usagef("-listen %s is not loopback: set -token (or EVENTSOURCE_CONSOLE_TOKEN) so that only you can replay and purge", *listen)
	}
	c := &console{e: e, token: *token, loopback: loopback}
	if e.bus != "" || e.redisURL != "" || e.amqpURL != "" || e.kafkaBrokers != "" {
		if c.broker, err = openBroker(ctx, e); err != nil {
			return err
		}
		defer c.broker.close()
	}
	if e.sqlitePath != "" || e.postgresURL != "" {
		if c.store, err = openStore(ctx, e); err != nil {
			return err
		}
		defer c.store.close()
	}
	if c.broker == nil && c.store == nil {
		return usagef("configure a bus (-bus and its URL) and/or a store (-sqlite-path or -postgres-url)")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: c.handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(e.log.Handler(), slog.LevelWarn)}
	addr := "http://" + ln.Addr().String() + "/"
	if *token != "" {
		fmt.Fprintf(e.stderr, "esctl: console on %s (open %s#token=<your token>)\n", addr, addr)
	} else {
		fmt.Fprintf(e.stderr, "esctl: console on %s\n", addr)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.stopTails()
		_ = srv.Shutdown(sctx)
		return nil
	case err := <-errc:
		return err
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type console struct {
	e        *env
	token    string
	loopback bool
	broker   broker
	store    *storeDB

	mu       sync.Mutex // serializes admin calls: one bus per group is shared
	tails    sync.WaitGroup
	live     map[int]context.CancelFunc // the running tails, each removed when it ends
	nextTail int
	stopping bool
}

func (c *console) stopTails() {
	c.mu.Lock()
	c.stopping = true // a tail that starts now would outlive the broker
	for _, cancel := range c.live {
		cancel()
	}
	c.mu.Unlock()
	c.tails.Wait()
}

func (c *console) handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web")
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/overview", c.overview)
	mux.HandleFunc("GET /api/deadletters/{group}/{id}", c.showDeadLetter)
	mux.HandleFunc("POST /api/dlq/replay", c.replay)
	mux.HandleFunc("POST /api/dlq/purge", c.purge)
	mux.HandleFunc("GET /api/tail", c.tail)
	return c.guard(mux)
}

// guard refuses requests for another host (DNS rebinding against a
// loopback console), API requests without the token, and cross-origin
// writes.
func (c *console) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if c.loopback && !isLoopback(host) {
			http.Error(w, "console: wrong Host for a loopback console", http.StatusForbidden)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/api/") {
			got := r.Header.Get(tokenHeader)
			if got == "" && r.URL.Path == "/api/tail" {
				got = r.URL.Query().Get("token") // EventSource cannot set headers
			}
			if c.token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(c.token)) != 1 {
				http.Error(w, "console: missing or wrong token", http.StatusUnauthorized)
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if r.Header.Get(tokenHeader) == "" && c.token == "" {
				// No token on loopback: the header must still be there, which
				// no cross-origin form or simple request can send.
				http.Error(w, "console: "+tokenHeader+" header required", http.StatusForbidden)
				return
			}
			if o := r.Header.Get("Origin"); o != "" {
				if u, err := url.Parse(o); err != nil || u.Host != r.Host {
					http.Error(w, "console: cross-origin request refused", http.StatusForbidden)
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

type overview struct {
	Time        time.Time                   `json:"time"`
	Bus         string                      `json:"bus,omitempty"`
	Store       string                      `json:"store,omitempty"`
	Groups      []groupStats                `json:"groups"`
	DeadLetters map[string][]deadLetterJSON `json:"dead_letters"`
	Followers   []followerRow               `json:"followers"`
	Head        int64                       `json:"head"`
	Errors      []string                    `json:"errors,omitempty"`
}

func (c *console) overview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), c.e.timeout)
	defer cancel()
	ov := overview{Time: time.Now().UTC(), Groups: []groupStats{}, DeadLetters: map[string][]deadLetterJSON{}, Followers: []followerRow{}}
	fail := func(err error) { ov.Errors = append(ov.Errors, err.Error()) }
	if c.broker != nil {
		ov.Bus = c.broker.where()
		c.mu.Lock()
		if rows, err := allStats(ctx, c.e, c.broker); err != nil {
			fail(err)
		} else {
			ov.Groups = rows
		}
		for _, g := range ov.Groups {
			adm, err := c.broker.admin(ctx, g.Group)
			if err != nil {
				fail(err)
				continue
			}
			recs, err := listAll(ctx, adm, filter{}, 200)
			if err != nil {
				fail(err)
			}
			list := make([]deadLetterJSON, 0, len(recs))
			for _, rec := range recs {
				list = append(list, toJSON(g.Group, rec, false))
			}
			ov.DeadLetters[g.Group] = list
		}
		c.mu.Unlock()
	}
	if c.store != nil {
		ov.Store = c.store.where
		if rows, err := c.store.followers(ctx); err != nil {
			fail(err)
		} else if rows != nil {
			ov.Followers = rows
		}
		if h, err := c.store.head(ctx); err != nil {
			fail(err)
		} else {
			ov.Head = h
		}
	}
	c.writeAPI(w, http.StatusOK, ov)
}

func (c *console) showDeadLetter(w http.ResponseWriter, r *http.Request) {
	if c.broker == nil {
		http.Error(w, "no bus configured", http.StatusNotFound)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.knownGroup(w, r, r.PathValue("group")) {
		return
	}
	adm, err := c.broker.admin(r.Context(), r.PathValue("group"))
	if err != nil {
		c.apiError(w, err)
		return
	}
	recs, err := findIDs(r.Context(), adm, []string{r.PathValue("id")})
	if err != nil {
		c.apiError(w, err)
		return
	}
	if len(recs) == 0 { // findIDs keeps only that ID, once
		http.Error(w, "no such dead letter", http.StatusNotFound)
		return
	}
	c.writeAPI(w, http.StatusOK, toJSON(r.PathValue("group"), recs[0], true))
}

// knownGroup answers 404 for a group the console does not show: the path
// comes from any page the browser opens (a GET needs no token on
// loopback), and each new group would open, and keep, a bus on the broker.
func (c *console) knownGroup(w http.ResponseWriter, r *http.Request, group string) bool {
	ctx, cancel := context.WithTimeout(r.Context(), c.e.timeout)
	defer cancel()
	groups, err := resolveGroups(ctx, c.e, c.broker)
	if err != nil {
		c.apiError(w, err)
		return false
	}
	if !slices.Contains(groups, group) {
		http.Error(w, "console: no such group", http.StatusNotFound)
		return false
	}
	return true
}

// action is the body of a replay or purge: one record, or all of a group.
type action struct {
	Group string `json:"group"`
	ID    string `json:"id"` // empty: every record of the group
}

func (c *console) readAction(w http.ResponseWriter, r *http.Request) (action, bool) {
	var a action
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		http.Error(w, "console: Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return a, false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields() // a mistyped "id" would otherwise mean every record
	if err := dec.Decode(&a); err != nil || a.Group == "" {
		http.Error(w, "console: body must be {\"group\": ..., \"id\": ...}", http.StatusBadRequest)
		return a, false
	}
	if c.broker == nil {
		http.Error(w, "console: no bus configured", http.StatusNotFound)
		return a, false
	}
	return a, true
}

func (c *console) replay(w http.ResponseWriter, r *http.Request) {
	a, ok := c.readAction(w, r)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.knownGroup(w, r, a.Group) {
		return
	}
	adm, err := c.broker.admin(r.Context(), a.Group)
	if err != nil {
		c.apiError(w, err)
		return
	}
	n := 1
	if a.ID == "" {
		n, err = adm.ReplayAll(r.Context())
	} else {
		err = adm.Replay(r.Context(), a.ID)
	}
	if err != nil {
		c.apiError(w, err)
		return
	}
	c.e.log.Info("console: replayed", slog.String("group", a.Group), slog.String("id", a.ID), slog.Int("count", n))
	c.writeAPI(w, http.StatusOK, map[string]int{"replayed": n})
}

func (c *console) purge(w http.ResponseWriter, r *http.Request) {
	a, ok := c.readAction(w, r)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.knownGroup(w, r, a.Group) {
		return
	}
	adm, err := c.broker.admin(r.Context(), a.Group)
	if err != nil {
		c.apiError(w, err)
		return
	}
	var n int64
	if a.ID == "" {
		n, err = adm.Purge(r.Context())
	} else {
		recs, lerr := findIDs(r.Context(), adm, []string{a.ID})
		if lerr != nil {
			c.apiError(w, lerr)
			return
		}
		if len(recs) > 0 { // findIDs keeps only that ID, once
			var k int
			k, err = c.broker.remove(r.Context(), a.Group, recs)
			n = int64(k)
		}
	}
	if err != nil {
		c.apiError(w, err)
		return
	}
	c.writeAPI(w, http.StatusOK, map[string]int64{"purged": n})
}

// tail streams the bus's events as server-sent events, one JSON object
// per event, until the client goes away.
func (c *console) tail(w http.ResponseWriter, r *http.Request) {
	if c.broker == nil {
		http.Error(w, "no bus configured", http.StatusNotFound)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		http.Error(w, "console: stopping", http.StatusServiceUnavailable)
		return
	}
	c.tails.Add(1)
	ctx, cancel := context.WithCancel(r.Context())
	if c.live == nil {
		c.live = map[int]context.CancelFunc{}
	}
	id := c.nextTail
	c.nextTail++
	c.live[id] = cancel
	c.mu.Unlock()
	defer c.tails.Done()
	defer func() {
		cancel()
		c.mu.Lock()
		delete(c.live, id)
		c.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	var wmu sync.Mutex
	send := func(event string, v any) {
		b, _ := json.Marshal(v)
		wmu.Lock()
		defer wmu.Unlock()
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, c.e.secrets.scrub(b))
		flusher.Flush()
	}
	err := c.broker.tail(ctx, func() { send("ready", map[string]string{"where": c.broker.where()}) }, func(ev rawEvent) { send("event", ev) })
	if err != nil && ctx.Err() == nil {
		send("failure", map[string]string{"error": err.Error()})
	}
}

// writeAPI writes v as JSON, secrets scrubbed like every other output.
func (c *console) writeAPI(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(c.e.secrets.scrub(b), '\n'))
}

func (c *console) apiError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, errNotFound):
		status = http.StatusNotFound
	case errors.Is(err, errBodyDropped): // the record is fine, it cannot be replayed
		status = http.StatusConflict
	}
	c.writeAPI(w, status, map[string]string{"error": err.Error()})
}
