package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// childrenCPU is the CPU time, user and system, of the benchmark's
// finished child processes (server, clients, ip, tc).
func childrenCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return tv(ru.Utime) + tv(ru.Stime)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// proc is a process the runner started, with its output going to a log
// file and, line by line, to a callback.
type proc struct {
	also   *proc // stopped with this one
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	closed sync.Once
}

// start runs prog in ns with its output to logPath; onLine sees each line.
// Without onLine the output goes straight to the file: through a pipe,
// the process's every write (its log) would wait on this process reading
// it, and on a saturated host this one gets a hundredth of the CPU
// (N = 100: the server's DHCP replies waited up to 100 s behind its log,
// cmd/swarmbench/TUNING.md, 2026-11-24).
func start(cmd *exec.Cmd, logPath string, onLine func(string)) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	if onLine == nil {
		return startToFile(cmd, lf)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		lf.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		lf.Close()
		return nil, err
	}
	pw.Close()
	p := &proc{cmd: cmd, done: make(chan struct{})}
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		defer lf.Close()
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lf.Write(append(sc.Bytes(), '\n'))
			if onLine != nil {
				onLine(sc.Text())
			}
		}
		io.Copy(lf, pr) // a line over 1 MiB: keep the rest in the log
	}()
	go func() {
		p.err = cmd.Wait()
		<-lines
		close(p.done)
	}()
	return p, nil
}

// DefaultClientNice is the clients' niceness unless --client-nice says
// otherwise: 0, the same as the server. On a real LAN every machine has
// its own CPU; here N client processes and the server share two cores,
// and the kernel shares them out per thread, so with 100 clients busy the
// server, which answers all of them, gets about a hundredth. At N = 100
// (8 MiB, 2 Mbit/s) on a saturated host, --client-nice 19 gave the server
// what it needed (no DHCP answer late, against 193 stages failed), but
// the starved clients then fell back to the web seed (11 copies from the
// server against 6) and the run took as long; at N = 30 it changed
// nothing (cmd/swarmbench/TUNING.md, 2026-11-24). The default keeps
// runs comparable with earlier ones; the option is there for a host
// that starves the server.
const DefaultClientNice = 0

// nice makes cmd start at niceness n (0: unchanged) by running it under
// nice(1), so that every thread the program starts inherits it.
func nice(cmd *exec.Cmd, n int) {
	if n == 0 {
		return
	}
	path, err := exec.LookPath("nice")
	if err != nil {
		return // coreutils is on every Debian; without it, no change
	}
	cmd.Args = append([]string{"nice", "-n", fmt.Sprint(n), cmd.Path}, cmd.Args[1:]...)
	cmd.Path = path
}

// startToFile runs cmd with its output to lf, which it closes.
func startToFile(cmd *exec.Cmd, lf *os.File) (*proc, error) {
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Start()
	lf.Close() // the child has its own descriptor
	if err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop asks the process to end (SIGTERM), then kills it after 5 s.
func (p *proc) stop() {
	if p.also != nil {
		defer p.also.stop()
	}
	p.closed.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// waitExits waits until every channel in dones is closed, for at most
// grace in all. (With a time.After channel, which fires once, the wait
// went on for every other client's own exit: 14 minutes after a
// timed-out phase at N = 100.)
func waitExits(ctx context.Context, dones []<-chan struct{}, grace time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	for _, d := range dones {
		select {
		case <-d:
		case <-ctx.Done():
			return
		}
	}
}
