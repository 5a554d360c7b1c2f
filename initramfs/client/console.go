package client

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// readKeys forwards what f delivers, chunk by chunk, until it fails.
func readKeys(ctx context.Context, f io.Reader, out chan<- []byte) {
	buf := make([]byte, 64)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			b := append([]byte(nil), buf[:n]...)
			select {
			case out <- b:
			case <-ctx.Done():
				return
			default: // nobody is reading: drop the key rather than block
			}
		}
		if err != nil {
			return
		}
	}
}

// stdinKeys returns stdin's keys when stdin is a terminal (put in raw
// mode for the time of the process), else nil.
func stdinKeys(ctx context.Context) <-chan []byte {
	if !isTerminal(int(os.Stdin.Fd())) {
		return nil
	}
	restore := makeRaw(int(os.Stdin.Fd()))
	go func() { <-ctx.Done(); restore() }()
	ch := make(chan []byte, 16)
	go readKeys(ctx, os.Stdin, ch)
	return ch
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// makeRaw turns off line buffering and echo (keys arrive one by one) but
// keeps output processing, so "\n" still returns the carriage.
func makeRaw(fd int) (restore func()) {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return func() {}
	}
	old := *t
	t.Lflag &^= unix.ICANON | unix.ECHO | unix.ISIG | unix.IEXTEN
	t.Iflag &^= unix.ICRNL | unix.IXON
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	unix.IoctlSetTermios(fd, unix.TCSETS, t)
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, &old) }
}

// Choose shows the menu on the console and waits for a choice or the end
// of the countdown. Without console input the countdown alone decides;
// with a timeout that waits forever and no input, the default is booted
// (nobody could ever choose).
func (e *realEnv) Choose(ctx context.Context, b *bootapi.Boot, note string) (*bootapi.OS, error) {
	m := newMenu(b, note)
	if e.in == nil && !m.counting {
		m.counting, m.left = true, 10*time.Second
	}
	fmt.Fprint(e.console, m.render())
	fmt.Fprint(e.console, m.status())
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	var pending []byte
	lastShown := ""
	for {
		act := actNone
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case in := <-e.in:
			var keys []key
			keys, pending = decodeKeys(append(pending, in...))
			act = m.keys(keys)
		case now := <-tick.C:
			act = m.tick(now.Sub(last))
			last = now
		}
		switch act {
		case actBoot:
			fmt.Fprint(e.console, "\r\n")
			e.log.Info("menu choice", "stage", "menu", "os", m.selected().Name, "by", map[bool]string{true: "countdown", false: "key"}[m.counting])
			return m.selected(), nil
		case actRescue:
			fmt.Fprint(e.console, "\r\n")
			return nil, nil
		case actRedraw:
			fmt.Fprint(e.console, m.render())
			lastShown = ""
		}
		if s := m.status(); s != lastShown {
			fmt.Fprint(e.console, s)
			lastShown = s
		}
	}
}
