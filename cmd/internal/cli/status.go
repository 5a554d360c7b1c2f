package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/dashboard"
)

// maxEventBytes bounds one event of the stream status reads (a snapshot
// of a few thousand machines fits).
const maxEventBytes = 32 << 20

func runStatus(env *Env, args []string) error {
	fs := newFlags(env, "status", "boottorrent status [--watch] [--server URL] [--dir DIR]",
		`Prints the class summary and the machine table of a running boottorrent
start, as its page at / shows them: failed and lost machines first, with
their last message. --watch keeps it on screen, refreshed in place as the
server's event stream changes. Colours only on a terminal (and not with
NO_COLOR set).`)
	watch := fs.Bool("watch", false, "keep the view on screen, refreshed as machines change (Ctrl-C ends it)")
	server := fs.String("server", "", "the server's HTTP address, http://IP:PORT (default: server.address and http_port of the project)")
	dir := fs.String("dir", "", "project folder for the default --server (default: the current folder)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(env.Stderr, "boottorrent status: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	base := strings.TrimRight(*server, "/")
	if base == "" {
		p, err := loadProject(env, *dir, func(string) {})
		if err != nil {
			return fmt.Errorf("%w (or name the server with --server http://IP:PORT)", err)
		}
		base = p.Config.HTTPBase()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	v := &statusView{out: env.Stdout, color: colorTerminal(env.Stdout), watch: *watch}
	err := followEvents(ctx, base, *watch, v.show)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// colorTerminal says whether w is a terminal that should get colours.
func colorTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// followEvents reads the server's event stream, keeps the machines up to
// date and calls show with them after each message; without watch it
// stops after the first. A dropped stream is resumed with Last-Event-ID.
func followEvents(ctx context.Context, base string, watch bool, show func([]bootapi.Machine, *dashboard.Summary, time.Time)) error {
	machines := map[string]bootapi.Machine{}
	var lastID string
	for {
		err := readEvents(ctx, base, lastID, func(id, event string, m *dashboard.Message) bool {
			lastID = id
			if event == "snapshot" {
				clear(machines)
			}
			for _, mc := range m.Machines {
				machines[mc.MAC] = mc
			}
			for _, mac := range m.Removed {
				delete(machines, mac)
			}
			list := make([]bootapi.Machine, 0, len(machines))
			for _, mc := range machines {
				list = append(list, mc)
			}
			show(list, &m.Summary, m.Now)
			return watch
		})
		if err == nil || !watch || ctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// readEvents reads one connection's events until fn returns false (nil),
// the stream ends or fails (an error).
func readEvents(ctx context.Context, base, lastID string, fn func(id, event string, m *dashboard.Message) bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+bootapi.PathEvents, nil)
	if err != nil {
		return fmt.Errorf("--server %q: %w", base, err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("connect to boottorrent at %s (is `boottorrent start` running there?): %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s%s: %s", base, bootapi.PathEvents, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxEventBytes)
	var id, event string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "event: "):
			event = line[7:]
		case strings.HasPrefix(line, "data: "):
			var m dashboard.Message
			if err := json.Unmarshal([]byte(line[6:]), &m); err != nil {
				return fmt.Errorf("%s%s: bad event: %w", base, bootapi.PathEvents, err)
			}
			if !fn(id, event, &m) {
				return nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s%s: %w", base, bootapi.PathEvents, err)
	}
	return fmt.Errorf("%s%s: the server closed the stream", base, bootapi.PathEvents)
}
