package client

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
	"github.com/boottorrent/boottorrent/netboot/netns/nstest"
	"github.com/boottorrent/boottorrent/netboot/vm"
)

// diImages is where debian-installer-12-netboot-amd64 puts the netboot
// installer's kernel and initrd.
const diImages = "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64"

// liveImages builds (once, cached outside the repository) the Debian 12
// live system the real-distribution tests boot, with
// .ci/images/debian-live.sh, and returns its folder.
func liveImages(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"mmdebstrap", "mksquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s to build the Debian live image (.ci/packages)", tool)
		}
	}
	script, _ := filepath.Abs("../../.ci/images/debian-live.sh")
	t0 := time.Now()
	out, err := exec.Command("bash", script).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s: %v\n%s", script, err, tail(string(stderr), 30))
	}
	// The folder is the last line (mksquashfs may print progress).
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	dir := strings.TrimSpace(lines[len(lines)-1])
	t.Logf("Debian live images in %s (%s)", dir, time.Since(t0).Round(time.Second))
	return dir
}

// linkOrCopy puts src at dst without a second copy when both are on one
// file system.
func linkOrCopy(t *testing.T, src, dst string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if os.Link(src, dst) == nil {
		return
	}
	copyFile(t, src, dst)
}

// TestQEMUDistros boots real distributions nobody here wrote through the
// whole chain (PXE, iPXE, boot client, BitTorrent, kexec) against the
// real `boottorrent start`, their root filesystem handed over in the
// initramfs (initrd_files), never fetched by the booted OS:
//
//  1. two BIOS VMs boot Debian 12 live (live-boot, live-media=) at once
//     to systemd's login prompt, showing the nonce written into the
//     squashfs and /proc/mounts with the live medium; they exchange
//     pieces; the server saw no HTTP request for the squashfs once they
//     booted; and a third VM, with RAM clearly below the rule, gets the
//     client's refusal and the server records it;
//  2. a BIOS VM boots the same root filesystem with dracut's
//     dmsquash-live (root=live:/boottorrent/LiveOS/squashfs.img), and
//     one boots Debian's netboot installer to its first screen.
func TestQEMUDistros(t *testing.T) {
	if err := vm.Available(vm.BIOS); err != nil {
		t.Skip(err)
	}
	for _, f := range []string{diImages + "/linux", diImages + "/initrd.gz"} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("needs the Debian installer's netboot images (debian-installer-12-netboot-amd64): %v", err)
		}
	}
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("needs tc: apt-get install iproute2")
	}
	deadline := time.Now().Add(30 * time.Minute)
	if d, ok := t.Deadline(); ok {
		deadline = d.Add(-2 * time.Minute)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	// The subtests run in parallel, after this function returns.
	t.Cleanup(cancel)
	img := liveImages(t)
	nonce, err := os.ReadFile(filepath.Join(img, "nonce"))
	if err != nil {
		t.Fatal(err)
	}
	binary := nstest.Static(t, nstest.Boottorrent)

	lan, hosts := nstest.LAN(t, "10.79.1.1/24")
	srvNS := hosts[0]
	dir := t.TempDir()
	serial := "console=ttyS0,115200 " + vm.GuestArgs
	linkOrCopy(t, filepath.Join(img, "vmlinuz"), filepath.Join(dir, "oss/live/vmlinuz"))
	linkOrCopy(t, filepath.Join(img, "initrd.live-boot"), filepath.Join(dir, "oss/live/initrd.img"))
	linkOrCopy(t, filepath.Join(img, "filesystem.squashfs"), filepath.Join(dir, "oss/live/live/filesystem.squashfs"))
	writeFile(t, filepath.Join(dir, "oss/live/config.yaml"), []byte(`dispname: Debian 12 live (live-boot)
method: kexec
kernel: vmlinuz
initrd: initrd.img
cmdline: boot=live live-media=/boottorrent `+serial+`
initrd_files: [live/filesystem.squashfs]
`))
	linkOrCopy(t, filepath.Join(img, "vmlinuz"), filepath.Join(dir, "oss/dracut/vmlinuz"))
	linkOrCopy(t, filepath.Join(img, "initrd.dracut"), filepath.Join(dir, "oss/dracut/initrd.img"))
	linkOrCopy(t, filepath.Join(img, "filesystem.squashfs"), filepath.Join(dir, "oss/dracut/LiveOS/squashfs.img"))
	writeFile(t, filepath.Join(dir, "oss/dracut/config.yaml"), []byte(`dispname: Debian 12 live (dracut)
method: kexec
kernel: vmlinuz
initrd: initrd.img
cmdline: root=live:/boottorrent/LiveOS/squashfs.img rd.live.image rd.live.overlay.overlayfs=1 `+serial+`
initrd_files: [LiveOS/squashfs.img]
`))
	linkOrCopy(t, diImages+"/linux", filepath.Join(dir, "oss/installer/linux"))
	linkOrCopy(t, diImages+"/initrd.gz", filepath.Join(dir, "oss/installer/initrd.gz"))
	writeFile(t, filepath.Join(dir, "oss/installer/config.yaml"), []byte(`dispname: Debian 12 installer
method: kexec
kernel: linux
initrd: initrd.gz
cmdline: priority=critical `+serial+`
`))
	macs := map[string]string{}
	var machines strings.Builder
	for _, n := range []string{"live-a:live", "live-b:live", "small:live", "dracut:dracut", "installer:installer"} {
		name, osName, _ := strings.Cut(n, ":")
		mac := vm.RandomMAC().String()
		macs[name] = mac
		fmt.Fprintf(&machines, "  \"%s\": {name: %s, os: %s}\n", mac, name, osName)
	}
	writeFile(t, filepath.Join(dir, "Boottorrent.yaml"), []byte(fmt.Sprintf(`version: 1
server:
  interface: eth0
dhcp:
  mode: full
  range: 10.79.1.100-10.79.1.150
boot:
  default_os: live
  timeout: 120s
  seed_time: 15s
  menu: [live, dracut, installer]
client:
  cmdline: %s
machines:
%s`, vm.GuestArgs, machines.String())))

	s := &e2eServer{t: t, binary: binary, dir: dir, ns: srvNS, base: "http://10.79.1.1:8080", extra: []string{"--log-level", "debug"}}
	s.start()
	t.Cleanup(s.stop)
	// The seeder serves an OS once it has hashed and checked its files;
	// machines started before would take it all from the web seed.
	for _, o := range []string{"live", "dracut", "installer"} {
		for deadline := time.Now().Add(5 * time.Minute); !regexp.MustCompile(`msg="OS ready" [^\n]*\bos=` + o + ` `).MatchString(s.log.String()); time.Sleep(time.Second) {
			if time.Now().After(deadline) {
				t.Fatalf("the seeder never had %s ready:\n%s", o, tail(s.log.String(), 30))
			}
		}
	}
	// The server's uplink below what two guests take in under TCG, so
	// that they download at once and pass pieces to each other.
	shape(t, srvNS, "80mbit")

	sizes := map[string]int64{}
	for _, o := range []string{"live", "dracut", "installer"} {
		var n int64
		filepath.Walk(filepath.Join(dir, "oss", o), func(_ string, fi os.FileInfo, _ error) error {
			if fi != nil && fi.Mode().IsRegular() {
				n += fi.Size()
			}
			return nil
		})
		sizes[o] = n
	}
	ramMB := func(o string) int { return int((bootapi.MinRAM(sizes[o])+(1<<20)-1)>>20) + 16 }

	startVM := func(t *testing.T, name string, mb int) *vm.VM {
		t.Helper()
		mac, _ := net.ParseMAC(macs[name])
		v, err := vm.Start(ctx, vm.Config{LAN: lan, Firmware: vm.BIOS, MAC: mac, Name: name, MemoryMB: mb})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s serial console (last lines):\n%s", name, v.Tail(80))
			}
			v.Close()
		})
		return v
	}
	wait := func(t *testing.T, v *vm.VM, what string, d time.Duration) time.Duration {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		el, err := v.WaitFor(c, what)
		if err != nil {
			t.Fatalf("%s: waiting for %q: %v\nserver log tail:\n%s", v.Name(), what, err, tail(s.log.String(), 30))
		}
		return el
	}
	// squashfsRequests counts the web seed's answers for one OS's
	// squashfs (file: its path in the OS folder, a regexp).
	squashfsRequests := func(file string) int {
		return len(regexp.MustCompile(`web seed: served[^\n]*file=`+file+`\b`).FindAllString(s.log.String(), -1))
	}
	machine := func(t *testing.T, v *vm.VM) bootapi.Machine {
		t.Helper()
		ms, err := s.machines()
		if err != nil {
			t.Fatal(err)
		}
		return ms[v.MAC().String()]
	}
	// checkLive asserts what proves the root filesystem came through the
	// client: the nonce, the live medium in /proc/mounts, no fetch=.
	checkLive := func(t *testing.T, v *vm.VM, mount string) {
		t.Helper()
		out := v.Output()
		if !strings.Contains(out, "boottorrent-nonce "+strings.TrimSpace(string(nonce))) {
			t.Errorf("%s: no nonce in /etc/issue on the console", v.Name())
		}
		var mounts []string
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "BT-MOUNT") {
				mounts = append(mounts, strings.TrimSpace(l))
			}
		}
		found := false
		for _, l := range mounts {
			found = found || strings.Contains(l, mount)
		}
		if !found {
			t.Errorf("%s: no %q in /proc/mounts:\n%s", v.Name(), mount, strings.Join(mounts, "\n"))
		}
		if strings.Contains(out, "fetch=") {
			t.Errorf("%s: fetch= on a command line", v.Name())
		}
		if m := regexp.MustCompile(`BT-MEM [^\r\n]*`).FindString(out); m != "" {
			t.Logf("%s: in the booted OS: %s", v.Name(), m)
		}
		// The RAM rule counts on kexec_load from the mapping (two copies
		// of the initrd); kexec_file_load, the fallback, needs three.
		if m := regexp.MustCompile(`kexec: kexec[^\r\n]*`).FindString(out); !strings.HasPrefix(m, "kexec: kexec_load,") {
			t.Errorf("%s: the kernel was not loaded with kexec_load: %q", v.Name(), m)
		} else {
			t.Logf("%s: %s", v.Name(), m)
		}
	}

	// Both subtests at once: their five machines keep the two cores busy
	// (one after the other, the installer finished first and dracut then
	// ran alone on one core).
	t.Run("live-boot-two-machines-and-too-little-ram", func(t *testing.T) {
		t.Parallel()
		t0 := time.Now()
		var wg sync.WaitGroup
		small := startVM(t, "small", ramMB("live")*2/3)
		a := startVM(t, "live-a", ramMB("live"))
		b := startVM(t, "live-b", ramMB("live"))
		t.Logf("live OS: %d MiB, rule %d MiB; VMs with %d MiB and (too little) %d MiB", sizes["live"]>>20, bootapi.MinRAM(sizes["live"])>>20, ramMB("live"), ramMB("live")*2/3)
		wg.Add(1)
		var smallErr string
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, 6*time.Minute)
			defer cancel()
			if _, err := small.WaitFor(c, "does not fit in this machine"); err != nil {
				smallErr = err.Error()
				return
			}
			// The console shows the refusal before the report goes
			// out: wait for the server to have it, then free the CPU
			// (the client only retries from here).
			for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(time.Second) {
				if ms, err := s.machines(); err == nil && ms[small.MAC().String()].Stage == bootapi.StageFailed {
					break
				}
			}
			small.Close()
		}()
		var requestsAtBoot int
		for _, v := range []*vm.VM{a, b} {
			wait(t, v, "msg=kexec", 10*time.Minute)
			requestsAtBoot = squashfsRequests(`live/filesystem\.squashfs`)
		}
		for _, v := range []*vm.VM{a, b} {
			el := wait(t, v, "login:", 8*time.Minute)
			t.Logf("%s: login prompt %s after power-on", v.Name(), el.Round(time.Second))
		}
		wg.Wait()
		if smallErr != "" {
			t.Errorf("small: no refusal on the console: %s", smallErr)
		} else if m := machine(t, small); m.Stage != bootapi.StageFailed || !strings.Contains(m.Message, "RAM") {
			t.Errorf("small: server has stage %q message %q, want the refusal", m.Stage, m.Message)
		} else {
			t.Logf("small: server: stage %s, %q", m.Stage, m.Message)
		}
		var peers int64
		for _, v := range []*vm.VM{a, b} {
			wait(t, v, "BT-NONCE", time.Minute)
			checkLive(t, v, "/run/live/medium")
			m := machine(t, v)
			t.Logf("%s: from peers %d, seeder %d, web seed %d; %s", v.Name(), m.FromPeers, m.FromSeeder, m.FromWeb, stageTimes(v, m))
			if m.FromPeers+m.FromSeeder < sizes["live"]/2 {
				t.Errorf("%s: only %d bytes from the seeder and peers of %d", v.Name(), m.FromPeers+m.FromSeeder, sizes["live"])
			}
			peers += m.FromPeers
		}
		if peers == 0 {
			t.Error("the two machines received nothing from each other")
		}
		if n := squashfsRequests(`live/filesystem\.squashfs`); n != requestsAtBoot {
			t.Errorf("the server served the squashfs over HTTP %d times after the machines booted", n-requestsAtBoot)
		}
		t.Logf("wall time %s", time.Since(t0).Round(time.Second))
	})

	t.Run("dracut-and-installer", func(t *testing.T) {
		t.Parallel()
		t0 := time.Now()
		d := startVM(t, "dracut", ramMB("dracut"))
		i := startVM(t, "installer", max(ramMB("installer"), 1024))
		el := wait(t, i, "Select a language", 10*time.Minute)
		t.Logf("installer: first screen %s after power-on", el.Round(time.Second))
		wait(t, d, "msg=kexec", 10*time.Minute)
		requestsAtBoot := squashfsRequests(`LiveOS/squashfs\.img`)
		el = wait(t, d, "login:", 10*time.Minute)
		t.Logf("dracut: login prompt %s after power-on", el.Round(time.Second))
		wait(t, d, "BT-NONCE", time.Minute)
		checkLive(t, d, "squashfs")
		if n := squashfsRequests(`LiveOS/squashfs\.img`); n != requestsAtBoot {
			t.Errorf("the server served the squashfs over HTTP %d times after dracut's machine booted", n-requestsAtBoot)
		}
		t.Logf("wall time %s", time.Since(t0).Round(time.Second))
	})
}
