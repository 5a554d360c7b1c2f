// Package dashboard is the operator's view of a class booting: the page at
// "/" (one HTML file, its script and style, embedded), and the event
// stream it reads (bootapi.PathEvents: a snapshot of the machines, then
// their changes, merged to at most a few messages a second), with the
// class summary both the page and `boottorrent status` show. It reads the
// machines from a Source (netboot/registry) and decides nothing about
// them: failed and lost are the registry's verdicts. It must not know
// DHCP, TFTP, BitTorrent or the configuration file.
//
// What machines report is hostile data: the page renders it with
// textContent only, under a Content-Security-Policy that allows nothing
// but the page's own script and style, and the page changes nothing.
package dashboard

import (
	"embed"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

//go:embed static
var static embed.FS

// Source is what the dashboard shows (the registry implements it).
type Source interface {
	Snapshot() []bootapi.Machine
}

// Options configure a Dashboard.
type Options struct {
	Source Source
	// Text writes the answer to a client that does not ask for HTML
	// (curl): a short index of the API.
	Text func(w io.Writer)
	// Interval is how often changes are sent (DefaultInterval if 0).
	Interval time.Duration
	// MaxReaders bounds the open event streams (DefaultMaxReaders if 0).
	MaxReaders int
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Dashboard serves the page and the event stream.
type Dashboard struct {
	o      Options
	stream *stream
	files  http.Handler

	once sync.Once
	done chan struct{}
}

// CSP allows the page's own script, style and stream and nothing else; a
// machine's report can neither inject markup nor load anything.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'"

// New returns a Dashboard; Start begins comparing the machines.
func New(o Options) *Dashboard {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.MaxReaders <= 0 {
		o.MaxReaders = DefaultMaxReaders
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	sub, _ := fs.Sub(static, "static")
	return &Dashboard{o: o, stream: newStream(o.Source, o.Now, o.Interval, o.MaxReaders),
		files: http.StripPrefix(bootapi.PathDashboardFiles, http.FileServerFS(sub)), done: make(chan struct{})}
}

// Start compares the machines every Interval until Close.
func (d *Dashboard) Start() { go d.stream.run(d.done) }

// Close stops the comparisons; open streams end with their requests.
func (d *Dashboard) Close() error {
	d.once.Do(func() { close(d.done) })
	return nil
}

// StreamBytes is how many bytes the event streams have written.
func (d *Dashboard) StreamBytes() int64 { return d.stream.sent.Load() }

// Register adds the page, its files and the event stream through handle.
// None of them is control traffic: a booting machine never waits for them.
func (d *Dashboard) Register(handle func(pattern string, h http.Handler, control bool)) {
	handle("GET /{$}", http.HandlerFunc(d.serveIndex), false)
	handle("GET "+bootapi.PathDashboardFiles, http.HandlerFunc(d.serveFile), false)
	handle("GET "+bootapi.PathEvents, d.stream, false)
}

// secure sets the headers every answer of the page carries.
func secure(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

// serveIndex is the page for a browser, and the text index for a client
// that does not accept HTML (curl, scripts).
func (d *Dashboard) serveIndex(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.Header.Get("Accept"), "text/html") && d.o.Text != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		d.o.Text(w)
		return
	}
	secure(w)
	b, err := static.ReadFile("static/index.html")
	if err != nil {
		http.Error(w, "page missing from the build", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b)
}

func (d *Dashboard) serveFile(w http.ResponseWriter, r *http.Request) {
	secure(w)
	d.files.ServeHTTP(w, r)
}
