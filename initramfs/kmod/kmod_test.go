package kmod

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A cut of Debian 6.1's modules.alias, with the real patterns for the
// NICs QEMU emulates and a few neighbours that must not match.
const aliasSample = `# Aliases extracted from modules themselves.
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v000010ECd00008168sv*sd*bc*sc*i* r8169
alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139too
alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139cp
alias pci:v*d*sv*sd*bc01sc08i02* nvme
alias usb:v0BDAp8153d*dc*dsc*dp*icFFiscFFip00in* r8152
broken line
alias only-two
alias pci:[ bad_pattern
`

func TestMatch(t *testing.T) {
	aliases, skipped, err := ParseAliases(strings.NewReader(aliasSample))
	if err != nil {
		t.Fatal(err)
	}
	if skipped != 3 {
		t.Errorf("skipped %d malformed lines, want 3", skipped)
	}
	for _, tc := range []struct {
		modalias string
		want     []string
	}{
		// QEMU's virtio-net-pci, then the virtio device it creates.
		{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", []string{"virtio_pci"}},
		{"virtio:d00000001v00001AF4", []string{"virtio_net"}},
		// QEMU's e1000 (82540EM) and e1000e (82574L).
		{"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", []string{"e1000"}},
		{"pci:v00008086d000010D3sv00001AF4sd00001100bc02sc00i00", []string{"e1000e"}},
		// Two drivers claim the RTL8139: both, in file order.
		{"pci:v000010ECd00008139sv00001AF4sd00001100bc02sc00i00", []string{"8139too", "8139cp"}},
		// An NVMe disk and a VGA card match no NIC driver here.
		{"pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", []string{"nvme"}},
		{"pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00", nil},
		{"", nil},
		{"   ", nil},
	} {
		if got := Match(aliases, tc.modalias); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Match(%q) = %v, want %v", tc.modalias, got, tc.want)
		}
	}
}

func TestNameAndNetClass(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/net/ethernet/realtek/8139too.ko": "8139too",
		"ne2k-pci":             "ne2k_pci",
		"a/b/virtio_net.ko.xz": "virtio_net",
		"x.ko.zst":             "x",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
	if !IsNetClass("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00") || IsNetClass("pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02") {
		t.Error("IsNetClass")
	}
}

const depSample = `kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko
kernel/drivers/net/ethernet/realtek/8139too.ko: kernel/drivers/net/mii.ko
/etc/passwd: ../../x.ko
`

func TestDepsClosure(t *testing.T) {
	d, err := ParseDeps(strings.NewReader(depSample))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d["/etc/passwd"]; ok {
		t.Error("an absolute path was accepted from modules.dep")
	}
	paths, missing := d.Closure([]string{"virtio_net", "8139too", "tg3"})
	want := []string{
		"kernel/drivers/net/ethernet/realtek/8139too.ko",
		"kernel/drivers/net/mii.ko",
		"kernel/drivers/net/net_failover.ko",
		"kernel/drivers/net/virtio_net.ko",
		"kernel/net/core/failover.ko",
	}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("closure %v, want %v", paths, want)
	}
	if !reflect.DeepEqual(missing, []string{"tg3"}) {
		t.Errorf("missing %v", missing)
	}
}

// TestDeviceModaliases reads a fake sysfs tree.
func TestDeviceModaliases(t *testing.T) {
	root := t.TempDir()
	for p, v := range map[string]string{
		"bus/pci/devices/0000:00:03.0/modalias":     "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n",
		"bus/virtio/devices/virtio0/modalias":       "virtio:d00000001v00001AF4\n",
		"bus/pci/devices/0000:00:01.0/modalias":     "",
		"bus/pci/devices/0000:00:02.0/not-modalias": "x",
	} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte(v), 0o644)
	}
	got, err := DeviceModaliases(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", "virtio:d00000001v00001AF4"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestHostModulesAlias matches against this machine's real
// modules.alias, when there is one.
func TestHostModulesAlias(t *testing.T) {
	files, _ := filepath.Glob("/lib/modules/*/modules.alias")
	if len(files) == 0 {
		t.Skip("needs a kernel module tree: apt-get install linux-image-amd64")
	}
	f, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	aliases, _, err := ParseAliases(f)
	if err != nil {
		t.Fatal(err)
	}
	if got := Match(aliases, "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"); len(got) == 0 || got[0] != "e1000" {
		t.Errorf("QEMU e1000 matched %v", got)
	}
	if got := Match(aliases, "virtio:d00000001v00001AF4"); len(got) != 1 || got[0] != "virtio_net" {
		t.Errorf("virtio-net matched %v", got)
	}
}

func BenchmarkMatchHost(b *testing.B) {
	files, _ := filepath.Glob("/lib/modules/*/modules.alias")
	if len(files) == 0 {
		b.Skip("needs a kernel module tree")
	}
	f, _ := os.Open(files[0])
	aliases, _, _ := ParseAliases(f)
	f.Close()
	for b.Loop() {
		Match(aliases, "pci:v00008086d000010D3sv00001AF4sd00001100bc02sc00i00")
	}
}

func FuzzParseAliases(f *testing.F) {
	f.Add(aliasSample, "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00")
	f.Add("alias [[[ x\nalias *\\ y\n", "\\")
	f.Add("alias pci:v*d*sv*sd*bc*sc*i* any\n", strings.Repeat("a", 5000))
	f.Fuzz(func(t *testing.T, file, modalias string) {
		aliases, _, _ := ParseAliases(strings.NewReader(file))
		for _, m := range Match(aliases, modalias) {
			if m == "" || strings.Contains(m, "-") {
				t.Fatalf("bad module name %q", m)
			}
		}
	})
}

func FuzzParseDeps(f *testing.F) {
	f.Add(depSample, "virtio_net")
	f.Add("a.ko:b.ko\nb.ko:a.ko\n", "a")
	f.Fuzz(func(t *testing.T, file, name string) {
		d, _ := ParseDeps(strings.NewReader(file))
		paths, _ := d.Closure([]string{name})
		for _, p := range paths {
			if strings.HasPrefix(p, "/") || strings.Contains(p, "..") {
				t.Fatalf("unsafe path %q", p)
			}
		}
	})
}
