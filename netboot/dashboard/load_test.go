package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/bootserver"
	"github.com/boottorrent/boottorrent/netboot/registry"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkClass500 is a class of 500 machines reporting every 2 s (five
// times as often as the swarm policy asks of a class that size) to the
// real boot API, with one page reading the event stream: it reports the
// stream's bytes per second and the process's CPU (server and the 500
// reporters together, an upper bound for the server). Run with
// go test ./netboot/dashboard -run '^$' -bench Class500 -benchtime 1x.
func BenchmarkClass500(b *testing.B) {
	const machines, every, span = 500, 2 * time.Second, 20 * time.Second
	for range b.N {
		reg := registry.New(registry.Options{})
		api, err := bootserver.New(bootserver.Options{Registry: reg})
		if err != nil {
			b.Fatal(err)
		}
		d := New(Options{Source: reg})
		d.Start()
		mux := http.NewServeMux()
		reg2 := func(p string, h http.Handler, _ bool) { mux.Handle(p, h) }
		api.Register(reg2)
		d.Register(reg2)
		srv := httptest.NewServer(mux)

		ctx, cancel := context.WithTimeout(context.Background(), span)
		var streamed int64
		var wg sync.WaitGroup
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+bootapi.PathEvents, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			streamed, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
		tr := &http.Transport{MaxIdleConnsPerHost: machines}
		c := &http.Client{Transport: tr}
		cpu0, t0 := cpuTime(), time.Now()
		var reports, failed int64
		var mu sync.Mutex
		for i := range machines {
			wg.Go(func() {
				mac := fmt.Sprintf("52:54:00:01:%02x:%02x", i/256, i%256)
				time.Sleep(time.Duration(i) * every / machines)
				tick := time.NewTicker(every)
				defer tick.Stop()
				for n := int64(1); ; n++ {
					r := bootapi.Report{MAC: mac, Stage: bootapi.StageDownload, OS: "debian", ListenPort: 6881,
						BytesTotal: 1 << 30, BytesDone: n << 20, FromPeers: n << 19, FromSeeder: n << 19, Peers: 20, RateBps: 1 << 20}
					body, _ := json.Marshal(r)
					req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+bootapi.PathReport, bytes.NewReader(body))
					resp, err := c.Do(req)
					mu.Lock()
					if err == nil && resp.StatusCode == http.StatusNoContent {
						reports++
					} else if ctx.Err() == nil {
						failed++
					}
					mu.Unlock()
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
				}
			})
		}
		wg.Wait()
		cancel()
		wall, cpu := time.Since(t0), cpuTime()-cpu0
		srv.Close()
		d.Close()
		tr.CloseIdleConnections()
		if failed > 0 || reg.Len() != machines {
			b.Fatalf("%d reports failed; registry holds %d machines", failed, reg.Len())
		}
		b.ReportMetric(float64(streamed)/wall.Seconds(), "stream-B/s")
		b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu-%")
		b.ReportMetric(float64(reports)/wall.Seconds(), "reports/s")
	}
}
