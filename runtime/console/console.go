// Package console is the runtime's web console, served by twinflow run on
// the admin address under /ui: the twins (addresses by function type, their
// state, delayed messages and recent activity, a form to message them), the
// platform (throughput, queues, ingress lag, endpoints, function latencies,
// checkpoints, live), and the dead letters (browse and replay).
//
// The pages are plain HTML, CSS and JavaScript modules embedded in the
// binary: nothing to build, nothing fetched from elsewhere. They talk to the
// admin API (twinflow.v1.AdminService, in Connect's JSON form) and follow
// the platform through server-sent events. A browser gets in by a login
// page that takes the admin token once (see sessions.go). Applications add
// pages of their own (Options.Apps), served from a file system the binary
// is given, so the runtime holds no application code.
package console

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Event is one server-sent event: a name and its data (JSON).
type Event struct {
	Name string
	Data []byte
}

// Feed is the live feed of the console's events. Subscribe returns the
// events to come and a function that ends the subscription; the channel is
// closed when the feed ends (the runtime stops).
type Feed interface {
	Subscribe() (<-chan Event, func())
}

// Options configure the console.
type Options struct {
	// Sessions checks who is logged in.
	Sessions *Sessions
	// Feed is the live feed sent to pages on /ui/events.
	Feed Feed
	// Apps are pages of applications, by name, each served under
	// /ui/apps/NAME/ from its file system (index.html first). A name is
	// letters, digits, '-' and '_'.
	Apps map[string]fs.FS
	// Logger receives what goes wrong; default slog.Default().
	Logger *slog.Logger
}

// Prefix is the path the console is served under.
const Prefix = "/ui/"

var appName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// CheckApps checks the names of application pages.
func CheckApps(apps map[string]fs.FS) error {
	for name := range apps {
		if !appName.MatchString(name) {
			return fmt.Errorf("console page name %q: use letters, digits, '-' and '_'", name)
		}
	}
	return nil
}

// Handler serves the console under Prefix. It authenticates its own
// requests: the login page and the static files are open, everything else
// wants a session.
func Handler(o Options) (http.Handler, error) {
	if err := CheckApps(o.Apps); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	files, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	login, err := template.ParseFS(files, "login.html")
	if err != nil {
		return nil, err
	}
	h := &handler{o: o, files: files, login: login}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/{$}", h.authed(h.serveIndex))
	mux.HandleFunc("GET /ui/login", h.serveLogin)
	mux.HandleFunc("POST /ui/login", h.doLogin)
	mux.HandleFunc("POST /ui/logout", h.doLogout)
	mux.HandleFunc("GET /ui/session", h.authed(h.serveSession))
	mux.HandleFunc("GET /ui/events", h.authed(h.serveEvents))
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(files)))
	for name, fsys := range o.Apps {
		prefix := Prefix + "apps/" + name + "/"
		mux.Handle("GET "+prefix, h.authed(http.StripPrefix(prefix, http.FileServerFS(fsys)).ServeHTTP))
	}
	mux.Handle("/ui/", http.NotFoundHandler())
	mux.Handle("GET /ui", http.RedirectHandler(Prefix, http.StatusMovedPermanently))
	return securityHeaders(mux), nil
}

type handler struct {
	o     Options
	files fs.FS
	login *template.Template
}

// securityHeaders keeps the pages to their own origin: scripts, styles and
// connections from it alone, no framing, no referrer.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// authed serves only requests with a valid session: pages go to the login
// page without one, other requests get 401 with the reason.
func (h *handler) authed(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h.o.Sessions.Authenticate(r); err != nil {
			if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
				http.Redirect(w, r, Prefix+"login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		next(w, r)
	}
}

func (h *handler) serveIndex(w http.ResponseWriter, r *http.Request) {
	http.ServeFileFS(w, r, h.files, "index.html")
}

type loginPage struct {
	Error string
	Next  string
}

func (h *handler) serveLogin(w http.ResponseWriter, r *http.Request) {
	h.renderLogin(w, http.StatusOK, loginPage{Next: safeNext(r.URL.Query().Get("next"))})
}

func (h *handler) renderLogin(w http.ResponseWriter, status int, p loginPage) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := h.login.Execute(w, p); err != nil {
		h.o.Logger.Warn("console: rendering the login page failed", "err", err)
	}
}

// safeNext keeps a redirect after login within the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		return Prefix
	}
	return next
}

func (h *handler) doLogin(w http.ResponseWriter, r *http.Request) {
	if err := SameOrigin(r); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	next := safeNext(r.PostFormValue("next"))
	ok, err := h.o.Sessions.CheckToken(strings.TrimSpace(r.PostFormValue("token")))
	if err != nil {
		h.renderLogin(w, http.StatusInternalServerError, loginPage{Error: err.Error(), Next: next})
		return
	}
	if !ok {
		h.renderLogin(w, http.StatusUnauthorized, loginPage{Next: next,
			Error: "That is not this runtime's admin token. It is in the data dir, secrets/admin.token; twinflow console prints a login link with it."})
		return
	}
	c, err := h.o.Sessions.Issue()
	if err != nil {
		h.renderLogin(w, http.StatusInternalServerError, loginPage{Error: err.Error(), Next: next})
		return
	}
	http.SetCookie(w, c)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *handler) doLogout(w http.ResponseWriter, r *http.Request) {
	if err := h.o.Sessions.Authenticate(r); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	http.SetCookie(w, h.o.Sessions.Expired())
	w.WriteHeader(http.StatusNoContent)
}

// sessionInfo is what a page learns of its session.
type sessionInfo struct {
	CSRF      string    `json:"csrf"`
	ExpiresAt time.Time `json:"expiresAt"`
	Apps      []string  `json:"apps"`
}

func (h *handler) serveSession(w http.ResponseWriter, r *http.Request) {
	csrf, exp, err := h.o.Sessions.CSRF(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	info := sessionInfo{CSRF: csrf, ExpiresAt: exp, Apps: []string{}}
	for name := range h.o.Apps {
		info.Apps = append(info.Apps, name)
	}
	slices.Sort(info.Apps)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(info)
}

// keepAliveEvery is how often an idle event stream sends a comment, so that
// proxies and browsers keep it open.
const keepAliveEvery = 15 * time.Second

// serveEvents streams the feed as server-sent events until the page goes
// away or the feed ends.
func (h *handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	events, stop := h.o.Feed.Subscribe()
	defer stop()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	alive := time.NewTicker(keepAliveEvery)
	defer alive.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Name, ev.Data)
		case <-alive.C:
			_, err = fmt.Fprint(w, ": keep-alive\n\n")
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}
