package dhcp

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

type captured struct {
	port int
	data []byte
}

// readCapture reads a testdata/firmware/*.txt file: "port hex" per line.
func readCapture(t testing.TB, path string) []captured {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []captured
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 64*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, h, ok := strings.Cut(line, " ")
		port, err1 := strconv.Atoi(p)
		data, err2 := hex.DecodeString(h)
		if !ok || err1 != nil || err2 != nil {
			t.Fatalf("%s: bad line %.40q", path, line)
		}
		out = append(out, captured{port, data})
	}
	return out
}

func captures(t testing.TB) []string {
	files, _ := filepath.Glob(filepath.Join("testdata", "firmware", "*.txt"))
	if len(files) == 0 {
		t.Fatal("no firmware captures in testdata/firmware: run `go test ./netboot/dhcp -run TestFirmware -update` as root with QEMU")
	}
	return files
}

// describe is the one-line digest of a request in golden files.
func describe(req *dhcpv4.DHCPv4) string {
	fw := identify(req)
	return fmt.Sprintf("%s from %s: arch %s (option 93 %v), PXE %v, iPXE %v, vendor class %q, user class %q",
		req.MessageType(), req.ClientHWAddr, fw.name, req.ClientArch(), fw.pxe, fw.ipxe,
		req.ClassIdentifier(), req.UserClass())
}

// TestGoldenFirmwareReplies replays requests captured from real firmware
// (BIOS iPXE, UEFI iPXE, EDK II's own PXE) through both modes and compares
// our replies byte for byte with testdata/firmware/*.golden. -update
// rewrites the golden files; review the diff.
func TestGoldenFirmwareReplies(t *testing.T) {
	for _, file := range captures(t) {
		name := strings.TrimSuffix(filepath.Base(file), ".txt")
		t.Run(name, func(t *testing.T) {
			pkts := readCapture(t, file)
			var b strings.Builder
			for _, mode := range []Mode{ModeProxy, ModeFull} {
				opt := testOptions(mode)
				opt.Machines = map[string]string{"52:54:00:b7:00:01": "bios01"}
				s := newTestServer(t, opt)
				for i, p := range pkts {
					req, err := parseRequest(p.data)
					if err != nil {
						t.Fatalf("captured request %d does not parse: %v", i, err)
					}
					fmt.Fprintf(&b, "=== %s mode, request %d on port %d: %s\n", mode, i, p.port, describe(req))
					from := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 77), Port: ClientPort}
					if ci := req.ClientIPAddr; ci != nil && !ci.IsUnspecified() {
						from.IP = ci
					}
					r := s.handle(req, p.port, from, t0)
					if r == nil {
						b.WriteString("no reply\n")
						continue
					}
					out := r.msg.ToBytes()
					if len(out) > 576 {
						t.Errorf("request %d: reply of %d bytes exceeds the 576 every client accepts", i, len(out))
					}
					fmt.Fprintf(&b, "reply to %v:\n%s\nhex %s\n", r.to, r.msg.Summary(), hex.EncodeToString(out))
				}
			}
			golden := strings.TrimSuffix(file, ".txt") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got := b.String(); got != string(want) {
				t.Errorf("replies differ from %s (run with -update and review the diff):\n%s", golden, firstDiff(string(want), got))
			}
		})
	}
}

// firstDiff shows the first differing line.
func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\nwant %s\ngot  %s", i+1, w, g)
		}
	}
	return ""
}

// FuzzHandle feeds arbitrary datagrams through parsing and both modes'
// handlers: no panic, and every reply fits a DHCP message with an intact
// boot file name.
func FuzzHandle(f *testing.F) {
	for _, file := range captures(f) {
		for _, p := range readCapture(f, file) {
			f.Add(p.port == PXEServerPort, p.data)
		}
	}
	d, _ := dhcpv4.NewDiscovery(testMAC, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_ARM64)))
	f.Add(false, d.ToBytes())
	f.Add(false, []byte{1, 1, 6, 0})
	proxy, err := New(testOptions(ModeProxy))
	if err != nil {
		f.Fatal(err)
	}
	fullOpt := testOptions(ModeFull)
	fullOpt.Machines = map[string]string{testMAC.String(): "pc"}
	full, err := New(fullOpt)
	if err != nil {
		f.Fatal(err)
	}
	from := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 77), Port: ClientPort}
	f.Fuzz(func(t *testing.T, pxePort bool, data []byte) {
		req, err := parseRequest(data)
		if err != nil {
			return
		}
		port := ServerPort
		if pxePort {
			port = PXEServerPort
		}
		for _, s := range []*Server{proxy, full} {
			r := s.handle(req, port, from, t0)
			if r == nil {
				continue
			}
			out := r.msg.ToBytes()
			if len(r.msg.BootFileName) > MaxBootFileLen {
				t.Fatalf("boot file name of %d bytes", len(r.msg.BootFileName))
			}
			back, err := dhcpv4.FromBytes(out)
			if err != nil {
				t.Fatalf("our reply does not parse: %v", err)
			}
			if back.BootFileName != r.msg.BootFileName {
				t.Fatalf("boot file cut: %q -> %q", r.msg.BootFileName, back.BootFileName)
			}
			if s == proxy && !r.msg.YourIPAddr.IsUnspecified() {
				t.Fatalf("proxy reply hands out %v", r.msg.YourIPAddr)
			}
		}
	})
}
