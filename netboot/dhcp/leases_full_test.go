package dhcp

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fullDisk mounts a tmpfs of size bytes on a new directory and returns it.
// The mount lives in a mount namespace private to the calling goroutine's
// thread, which the goroutine keeps locked until it exits: the kernel drops
// the mount with the thread even if the test dies, so nothing is left
// behind on the host. Needs root (CAP_SYS_ADMIN) for unshare and mount.
func fullDisk(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a small tmpfs in a private mount namespace to fill it")
	}
	runtime.LockOSThread() // never unlocked: the thread ends with the test goroutine
	if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
		t.Fatalf("unshare mount namespace: %v", err)
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make / private: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// TestPoolFullDisk: a lease storm on a filesystem that fills up. Every
// append that fails is cut off again, so the file ends on a complete record
// and a restart knows every lease that was ACKed; none that was not.
func TestPoolFullDisk(t *testing.T) {
	dir := fullDisk(t, 16<<10)
	file := filepath.Join(dir, "leases.json")
	p, err := newPool(poolConfig{first: mustAddr("10.0.0.10"), last: mustAddr("10.0.255.250"), file: file}, t0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	// Fill the rest of the filesystem except for a few hundred bytes, so
	// the storm below hits ENOSPC in the middle of a record.
	pad, err := os.Create(filepath.Join(dir, "pad"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 512)
	for {
		if _, err := pad.Write(chunk); err != nil {
			break
		}
	}
	pad.Close()
	os.Truncate(pad.Name(), mustSize(t, pad.Name())-4096+300)

	acked := map[netip.Addr]string{}
	failed := 0
	for i := 0; i < 400 && failed < 20; i++ {
		m := mac(i)
		ip, err := p.offer(m, netip.Addr{}, t0)
		if err != nil {
			t.Fatal(err)
		}
		v, why := p.request(m, ip, true, fmt.Sprintf("host-with-a-long-name-%04d", i), time.Hour, t0)
		switch v {
		case verdictACK:
			acked[ip] = m
		case verdictIgnore:
			if !strings.Contains(why, "no space left") {
				t.Fatalf("request %d: %s", i, why)
			}
			p.cancelOffer(m)
			failed++
		default:
			t.Fatalf("request %d: verdict %v (%s)", i, v, why)
		}
	}
	if failed == 0 {
		t.Fatal("the filesystem never filled: the test proves nothing")
	}
	if len(acked) == 0 {
		t.Fatal("no lease was written before the disk filled")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		t.Fatalf("lease file ends in a torn record: %q", data[max(0, len(data)-60):])
	}
	// Room again: the next append starts on a line of its own.
	os.Remove(pad.Name())
	extra := dora(t, p, mac(1000), t0)
	acked[extra] = mac(1000)
	p.close()

	q, err := newPool(poolConfig{first: mustAddr("10.0.0.10"), last: mustAddr("10.0.255.250"), file: file}, t0)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	for ip, m := range acked {
		if l, ok := q.lookup(ip); !ok || l.MAC != m || l.State != stateBound {
			t.Errorf("after restart %v: %+v %v, want bound to %s", ip, l, ok, m)
		}
	}
	if n := q.len(); n != len(acked) {
		t.Errorf("after restart %d leases, want the %d ACKed", n, len(acked))
	}
	t.Logf("%d leases ACKed, %d refused on a full disk, all recovered", len(acked), failed)
}

func mustSize(t *testing.T, name string) int64 {
	t.Helper()
	st, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestPoolLoadRecordAfterTornOne: a file written before failed appends
// were cut off holds a torn record with a whole one glued onto it. Load
// keeps the whole one and every record after it.
func TestPoolLoadRecordAfterTornOne(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	exp := t0.Add(time.Hour).Format(time.RFC3339)
	rec := func(ip, m string) string {
		return fmt.Sprintf(`{"ip":%q,"mac":%q,"state":"bound","expires":%q}`, ip, m, exp)
	}
	content := leaseFileHeader + "\n" +
		rec("10.0.0.11", mac(1)) + "\n" +
		`{"ip":"10.0.` + rec("10.0.0.12", mac(2)) + "\n" +
		rec("10.0.0.13", mac(3)) + "\n" +
		`{"ip":"10.0.0.1` // torn at the end by a crash
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newTestPool(t, "10.0.0.10", "10.0.0.20", file, nil, t0)
	for i, ip := range []string{"10.0.0.11", "10.0.0.12", "10.0.0.13"} {
		if l, ok := p.lookup(mustAddr(ip)); !ok || l.MAC != mac(i+1) {
			t.Errorf("%s: %+v %v, want bound to %s", ip, l, ok, mac(i+1))
		}
	}
	if p.len() != 3 {
		t.Errorf("%d leases loaded, want 3", p.len())
	}
}
