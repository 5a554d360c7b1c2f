package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// HelperEnv names the environment variable that makes the swarmbench
// binary (or a test binary) act as one of the harness's own helpers inside
// a namespace instead of running the benchmark: "serve" (a plain HTTP file
// server) or "fetch" (a plain HTTP client). They let the harness measure
// an HTTP baseline without boottorrent, e.g. in its smoke test.
const HelperEnv = "SWARMBENCH_HELPER"

// fetchMarker starts the line the fetch helper prints when it is done.
const fetchMarker = "swarmbench-fetch "

// FetchResult is the fetch helper's final line.
type FetchResult struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// Helper runs the helper named by HelperEnv and returns the exit code.
func Helper(name string, args []string, stdout, stderr io.Writer) int {
	switch name {
	case "serve":
		if len(args) != 2 {
			fmt.Fprintln(stderr, "serve: want DIR ADDR")
			return 2
		}
		return helperServe(args[0], args[1], stdout, stderr)
	case "fetch":
		if len(args) == 0 {
			fmt.Fprintln(stderr, "fetch: want URL...")
			return 2
		}
		return helperFetch(args, stdout)
	case "lab-seed":
		return labSeed(args, stdout, stderr)
	case "lab-leech":
		return labLeech(args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "%s=%q: unknown helper\n", HelperEnv, name)
	return 2
}

func helperServe(dir, addr string, stdout, stderr io.Writer) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir)), ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Fprintln(stdout, "serving", dir, "on", ln.Addr())
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func helperFetch(urls []string, stdout io.Writer) int {
	start := time.Now()
	var res FetchResult
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	for _, u := range urls {
		resp, err := c.Get(u)
		if err != nil {
			res.Error = err.Error()
			break
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res.Bytes += n
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		if err != nil {
			res.Error = err.Error()
			break
		}
	}
	res.Seconds = time.Since(start).Seconds()
	b, _ := json.Marshal(res)
	fmt.Fprintln(stdout, fetchMarker+string(b))
	if res.Error != "" {
		return 1
	}
	return 0
}

// parseFetchLine reads the fetch helper's final line.
func parseFetchLine(line string) (FetchResult, bool) {
	return markedLine[FetchResult](line, fetchMarker)
}

// markedLine decodes the JSON that a helper or the boot client prints
// after marker on its final line; false for any other line, or one whose
// JSON does not decode (a line cut short is no result).
func markedLine[T any](line, marker string) (T, bool) {
	var v T
	rest, ok := strings.CutPrefix(line, marker)
	if !ok {
		return v, false
	}
	if err := json.Unmarshal([]byte(rest), &v); err != nil {
		return v, false
	}
	return v, true
}
