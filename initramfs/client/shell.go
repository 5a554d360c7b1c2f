package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Shell is the rescue shell: a few built-in commands for looking around a
// machine whose boot failed (the initramfs holds no other programs), and
// running any program by its path. It reads from the console's key
// stream, echoing as it goes.
func (e *realEnv) Shell(ctx context.Context) {
	out := e.console
	fmt.Fprint(out, "\r\nrescue shell: help, ls, cat, dmesg, ip, lsmod, modprobe, env, reboot, poweroff, exit (or any /path/program)\r\n")
	for {
		fmt.Fprint(out, "boottorrent# ")
		line, ok := e.readLine(ctx)
		if !ok {
			return
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "exit" {
			return
		}
		runBuiltin(out, f, e.stdio)
	}
}

// readLine assembles a line from the key stream with echo and backspace.
func (e *realEnv) readLine(ctx context.Context) (string, bool) {
	if e.in == nil {
		return "", false
	}
	var b []byte
	for {
		select {
		case <-ctx.Done():
			return "", false
		case in := <-e.in:
			for _, c := range in {
				switch {
				case c == '\r' || c == '\n':
					fmt.Fprint(e.console, "\r\n")
					return string(b), true
				case c == 0x7f || c == 0x08:
					if len(b) > 0 {
						b = b[:len(b)-1]
						fmt.Fprint(e.console, "\b \b")
					}
				case c == 0x04: // Ctrl-D
					return "exit", true
				case c >= 0x20 && c < 0x7f && len(b) < 512:
					b = append(b, c)
					e.console.Write([]byte{c})
				}
			}
		}
	}
}

func runBuiltin(out io.Writer, f []string, stdio func() (*os.File, *os.File, *os.File, func())) {
	say := func(format string, a ...any) { fmt.Fprintf(out, strings.ReplaceAll(format, "\n", "\r\n"), a...) }
	crlf := func(b []byte) { out.Write(bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))) }
	arg := func(i int, def string) string {
		if len(f) > i {
			return f[i]
		}
		return def
	}
	switch f[0] {
	case "help":
		say("ls [dir]  cat file  dmesg  ip (addresses)  lsmod  modprobe name  env  reboot  poweroff  exit (back to the menu)\n")
	case "ls":
		ents, err := os.ReadDir(arg(1, "."))
		if err != nil {
			say("%v\n", err)
			return
		}
		for _, d := range ents {
			info, _ := d.Info()
			size := int64(0)
			if info != nil {
				size = info.Size()
			}
			say("%s %10d %s\n", d.Type(), size, d.Name())
		}
	case "cat":
		b, err := os.ReadFile(arg(1, ""))
		if err != nil {
			say("%v\n", err)
			return
		}
		crlf(b)
	case "dmesg":
		n, _ := unix.Klogctl(10, nil) // SYSLOG_ACTION_SIZE_BUFFER
		if n <= 0 {
			n = 1 << 20
		}
		buf := make([]byte, n)
		m, err := unix.Klogctl(3, buf) // SYSLOG_ACTION_READ_ALL
		if err != nil {
			say("%v\n", err)
			return
		}
		crlf(buf[:m])
	case "ip":
		ifs, _ := net.Interfaces()
		for _, i := range ifs {
			addrs, _ := i.Addrs()
			var as []string
			for _, a := range addrs {
				as = append(as, a.String())
			}
			say("%-8s %s %-17s %s\n", i.Name, i.Flags, i.HardwareAddr, strings.Join(as, " "))
		}
		if b, err := os.ReadFile("/proc/net/route"); err == nil {
			crlf(b)
		}
	case "lsmod":
		b, _ := os.ReadFile("/proc/modules")
		crlf(b)
	case "modprobe":
		loadOne(out, arg(1, ""))
	case "env":
		env := os.Environ()
		sort.Strings(env)
		say("%s\n", strings.Join(env, "\n"))
	case "reboot", "poweroff":
		unix.Sync()
		cmd := unix.LINUX_REBOOT_CMD_RESTART
		if f[0] == "poweroff" {
			cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
		}
		say("%v\n", unix.Reboot(cmd))
	default:
		cmd := exec.Command(f[0], f[1:]...)
		var done func()
		cmd.Stdin, cmd.Stdout, cmd.Stderr, done = stdio()
		err := cmd.Run()
		done()
		if err != nil {
			say("%v\n", err)
		}
	}
}
