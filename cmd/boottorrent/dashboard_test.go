package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestDashboardInBrowser runs the real `boottorrent start` in a namespace,
// has machines report to it as boot clients do, and opens its page in
// Debian's chromium (headless, in a second namespace on the same LAN,
// driven over a pipe): the table fills, a progress bar moves on an event,
// a failed machine is pinned on top with its message, and a message
// holding <script> is shown as text and runs nothing. Then `status
// --watch` under tmux shows the same table, and /metrics counts it.
// BOOTTORRENT_SCREENSHOT=path also writes the screenshot there (the
// README's docs/dashboard.png).
func TestDashboardInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("needs Debian's chromium: apt-get install chromium")
	}
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("needs tmux: apt-get install tmux")
	}
	binary, srv, lab, dir, write := serverLab(t, "10.79.0.1/24", "10.79.0.2/24")
	names := "machines:\n"
	for i := range 8 {
		names += fmt.Sprintf("  52:54:00:00:01:%02x: {name: lab-%02d, os: debian}\n", i, i+5)
	}
	names += "  52:54:00:00:00:0a: {name: lab-01, os: debian}\n  52:54:00:00:00:0b: {name: lab-02, os: debian}\n" +
		"  52:54:00:00:00:0c: {name: lab-03, os: debian}\n  52:54:00:00:00:0d: {name: lab-04, os: debian}\n"
	write("Boottorrent.yaml", []byte("version: 1\nserver:\n  interface: eth0\ndhcp:\n  mode: proxy\nboot:\n  timeout: 0s\n"+names))
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	write("oss/debian/config.yaml", []byte("dispname: Debian\nmethod: bin\nbin: payload.bin\n"))
	write("oss/debian/payload.bin", payload)

	log := &logBuffer{exited: make(chan struct{})}
	cmd := srv.Command(context.Background(), binary, "start", "--dir", dir)
	cmd.Stderr, cmd.Stdout = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(log.exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-log.exited })
	log.waitFor(t, "msg=ready", 4*time.Minute)
	base := "http://10.79.0.1:8080"
	// Machines report as the boot client does (POST PathReport), each from
	// an address of its own as on a real LAN: the registry holds only a few
	// machines announced over HTTP alone per sending address.
	const total = 400 << 20
	clients := map[string]*http.Client{}
	clientFor := func(mac string) *http.Client {
		if c, ok := clients[mac]; ok {
			return c
		}
		addr := netip.AddrFrom4([4]byte{10, 79, 0, byte(100 + len(clients))})
		if out, err := lab.Run("ip", "addr", "add", addr.String()+"/24", "dev", "eth0"); err != nil {
			t.Fatalf("ip addr add %s: %v\n%s", addr, err, out)
		}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
				var conn net.Conn
				err := lab.Do(func() error {
					var err error
					d := net.Dialer{LocalAddr: &net.TCPAddr{IP: addr.AsSlice()}}
					conn, err = d.DialContext(ctx, network, a)
					return err
				})
				return conn, err
			}}}
		clients[mac] = c
		return c
	}
	report := func(mac, stage string, done int64, msg string) {
		t.Helper()
		r := bootapi.Report{MAC: mac, Stage: stage, OS: "debian", ListenPort: 6881, Message: msg,
			BytesTotal: total, BytesDone: done, FromPeers: done * 3 / 4, FromSeeder: done / 4, Peers: 5, RateBps: 12 << 20}
		b, _ := json.Marshal(r)
		resp, err := clientFor(mac).Post(base+bootapi.PathReport, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("report: %s", resp.Status)
		}
	}
	const (
		fast    = "52:54:00:00:00:0a"
		slow    = "52:54:00:00:00:0b"
		broken  = "52:54:00:00:00:0c"
		hostile = "52:54:00:00:00:0d"
		script  = `<script>window.pwned=1</script><img src=x onerror="window.pwned=2">`
	)
	for i := range 8 {
		report(fmt.Sprintf("52:54:00:00:01:%02x", i), bootapi.StageDownload, int64(i+1)*total/10, "")
	}
	report(fast, bootapi.StageDownload, total/5, "")
	report(slow, bootapi.StageSeeding, total, "")
	report(broken, bootapi.StageDownload, total/3, "")
	report(hostile, bootapi.StageDownload, total/2, script)
	report(broken, bootapi.StageFailed, total/3, "kexec: Exec format error: the kernel is not for this machine")

	// Chromium in the lab's namespace, driven over a pipe (no debugging
	// port anywhere).
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
			chromedp.WindowSize(1500, 900), chromedp.UserDataDir(t.TempDir()),
			chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
				cmd.Path, _ = exec.LookPath("ip")
				cmd.Args = append([]string{"ip", "netns", "exec", lab.Name, chromium}, cmd.Args[1:]...)
			}))...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelT()
	row := func(mac string) string { return `tr[data-mac="` + mac + `"]` }
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(row(hostile))); err != nil {
		t.Fatalf("page: %v\nserver log:\n%s", err, log.String())
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#machines tbody tr").length`))
	if err != nil || rows != 12 {
		t.Fatalf("table rows: %d, %v", rows, err)
	}
	first, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => { const r = document.querySelector("#machines tbody tr");
		return [r.dataset.mac, r.dataset.stage, r.querySelector("td.msg").textContent]; })()`))
	if err != nil || len(first) != 3 || first[0] != broken || first[1] != bootapi.StageFailed || !strings.Contains(first[2], "Exec format error") {
		t.Errorf("first row: %q, %v; want the failed machine with its message", first, err)
	}
	msg, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('`+row(hostile)+` td.msg').textContent`))
	if err != nil || msg != script {
		t.Errorf("hostile message shown as %q (%v), want the text itself", msg, err)
	}
	pwned, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.pwned !== undefined || document.querySelector("#machines img, #machines script") !== null`))
	if err != nil || pwned {
		t.Errorf("the hostile message ran or made elements: %v %v", pwned, err)
	}
	// A progress bar moves when the machine's next report arrives.
	progress := func() float64 {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.querySelector('`+row(fast)+` progress').value`))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := progress()
	report(fast, bootapi.StageDownload, total*3/5, "")
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector('`+row(fast)+` progress').value > 0.5`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("progress bar stayed at %.2f after a report of 0.6: %v", before, err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "dashboard.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if p := os.Getenv("BOOTTORRENT_SCREENSHOT"); p != "" {
		os.WriteFile(p, png, 0o644)
	}
	t.Logf("screenshot: %d bytes in %s", len(png), t.ArtifactDir())

	// status --watch under tmux, in the lab's namespace.
	sock := "bt-" + lab.Name
	tm := func(args ...string) string {
		out, err := lab.Run(tmux, append([]string{"-L", sock}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	tm("new-session", "-d", "-x", "220", "-y", "40", binary+" status --watch --server "+base)
	t.Cleanup(func() { lab.Run(tmux, "-L", sock, "kill-server") })
	var pane string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		pane = tm("capture-pane", "-p")
		if strings.Contains(pane, "MESSAGE") && strings.Contains(pane, broken) {
			break
		}
	}
	lines := strings.Split(pane, "\n")
	i := 0
	for i < len(lines) && !strings.HasPrefix(lines[i], "NAME") {
		i++
	}
	if i+1 >= len(lines) || !strings.Contains(lines[i+1], broken) || !strings.Contains(lines[i+1], "Exec format error") ||
		!strings.Contains(pane, "0/12 booted") {
		t.Errorf("status --watch under tmux: no table with the failed machine first:\n%s", pane)
	}
	t.Logf("status --watch:\n%s", pane)

	// /metrics, parsed by Prometheus's parser, counts what happened.
	resp, err := lab.HTTPClient(10 * time.Second).Get(base + bootapi.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	stage := map[string]float64{}
	for _, m := range fams["boottorrent_machines"].GetMetric() {
		stage[m.Label[0].GetValue()] = m.Gauge.GetValue()
	}
	if stage["failed"] != 1 || stage["download"] != 10 || stage["seeding"] != 1 {
		t.Errorf("machines by stage: %v", stage)
	}
	var peers float64
	for _, m := range fams["boottorrent_payload_bytes_total"].GetMetric() {
		if m.Label[0].GetValue() == "peers" {
			peers = m.Counter.GetValue()
		}
	}
	want := int64(0)
	for i := range 8 {
		want += int64(i+1) * total / 10 * 3 / 4
	}
	want += total*3/5*3/4 + total*3/4 + total/3*3/4 + total/2*3/4
	if int64(peers) != want {
		t.Errorf("payload from peers %d, want %d", int64(peers), want)
	}
	var httpDash float64
	for _, m := range fams["boottorrent_http_sent_bytes_total"].GetMetric() {
		if m.Label[0].GetValue() == "dashboard" {
			httpDash = m.Counter.GetValue()
		}
	}
	if httpDash == 0 {
		t.Error("no dashboard bytes counted")
	}
}
