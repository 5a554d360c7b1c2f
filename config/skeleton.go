package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Skeleton returns a commented Boottorrent.yaml with every setting
// explained. iface and addr are the detected LAN interface and address;
// empty ones are left commented out.
func Skeleton(iface, addr string) string {
	commentIf := func(v string) string {
		if v == "" {
			return "# "
		}
		return ""
	}
	return fmt.Sprintf(`# Boottorrent.yaml — settings of a boottorrent project.
# Every key is optional except where noted; the values shown are the defaults.
# Check this file with:  boottorrent check      Run it with:  boottorrent start
version: %d                # schema version of this file

server:
  # The LAN interface the lab's machines boot from. Default: the first
  # interface that is up, not loopback, with an IPv4 address.
  %sinterface: %s
  # The IPv4 address machines reach this server at. Default: the
  # interface's first IPv4 address.
  %saddress: %s
  http_port: 8080          # one HTTP listener: iPXE scripts, boot client, API, web seed, tracker
  torrent_port: 6881       # BitTorrent (TCP) and the UDP tracker

dhcp:
  # proxy: answer only PXE firmware, next to the site's DHCP server, which
  #        keeps handing out the addresses (safe on an existing network).
  # full:  be the DHCP server of an isolated lab LAN (needs range:).
  # off:   no DHCP at all; point your DHCP server at us (see README).
  mode: proxy
  # full mode only: the addresses to lease, FIRST-LAST, inside the
  # interface's network and not containing the server's address.
  # range: 10.0.0.50-10.0.0.150
  # lease_time: 1h
  # router: 10.0.0.1       # full mode: handed out only when set
  # dns: [10.0.0.1]        # full mode: handed out only when set

tftp:
  # TFTP serves iPXE to firmware that is not iPXE already (most real
  # hardware). Machines whose NIC ROM is iPXE (QEMU/KVM) skip it.
  enabled: true

boot:
  # The OS (folder name under oss/) booted when the menu's countdown ends.
  # Default: the first OS of the menu.
  # default_os: debian
  timeout: 10s             # menu countdown; 0s boots at once; a negative value (-1s) waits forever
  # Which OSes the menu shows, in order. Default: all, sorted by folder name.
  # menu: [debian, memtest]
  seed_time: 30s           # how long a machine keeps seeding after its download, before it boots

client:
  # The boot client's kernel and its module tree. Default: this machine's
  # running kernel if /boot holds it, else the newest /boot/vmlinuz-* with
  # a matching /lib/modules (Debian: apt-get install linux-image-amd64).
  # kernel: /boot/vmlinuz-6.1.0-27-amd64
  # modules: /lib/modules/6.1.0-27-amd64
  # NIC drivers to pack besides the default set (virtio, e1000/e1000e,
  # igb, ixgbe, r8169, tg3, bnx2, ...), by module name:
  # extra_modules: [atlantic]
  # Extra kernel command line for the boot client, e.g. "quiet":
  # cmdline: ""

ipxe:
  dir: /usr/lib/ipxe       # Debian's ipxe package
  bios: undionly.kpxe      # for BIOS PXE firmware
  uefi: ipxe.efi           # for UEFI x64 firmware (snponly.efi uses the firmware's NIC driver)

torrent:
  # Trackers announced besides the built-in one (rarely needed on a LAN).
  # trackers: [udp://tracker.example.org:6969]

trust:
  # Signed OSes (boottorrent sign): the minisign public keys whose
  # manifests are trusted, as files (relative to this folder) or "RW…"
  # lines. They are baked into the client initramfs.
  # keys: [keys/lab.pub]
  # require: serve and boot only signed OSes; if-present: check the
  # manifest of an OS that has one; off: check nothing.
  policy: if-present

# Machines that boot unattended into their role, by MAC address:
machines:
  # 52:54:00:12:34:56: {name: node01, os: debian}
`, CurrentVersion, commentIf(iface), orPlaceholder(iface, "eth1"), commentIf(addr), orPlaceholder(addr, "10.0.0.1"))
}

func orPlaceholder(v, p string) string {
	if v == "" {
		return p
	}
	return v
}

// OSReadme explains how to add an operating system; `init` writes it to
// oss/README.md.
const OSReadme = `# Operating systems

Each folder here is one operating system the boot menu offers. The folder
name (letters, digits, '.', '_', '-') is its name in Boottorrent.yaml
(boot.default_os, boot.menu, machines:) and in URLs.

From a distribution's ISO (Debian live, Ubuntu, Fedora live, Arch, the
Debian installer), 'boottorrent add FILE.iso NAME' writes the folder and
its config.yaml. By hand:

A folder holds the OS's files and a config.yaml:

    oss/debian/
      config.yaml
      vmlinuz
      initrd.img

config.yaml for a Linux kernel booted with kexec:

    dispname: Debian 12           # shown in the menu (default: the folder name)
    method: kexec
    kernel: vmlinuz               # files are named relative to this folder
    initrd: initrd.img            # optional
    cmdline: "boot=live quiet"    # the kernel command line

for a static binary run on the client:

    dispname: Hello
    method: bin
    bin: hello
    binargs: "--greeting hi"      # a string or a list

for a disk image run in QEMU on the client (the original BootTorrent's
bin-qemu-x86_64 is accepted too):

    dispname: FreeDOS
    method: qemu
    args: "-fda odin1440.img"     # QEMU's arguments
    files: [odin1440.img]         # optional; default: every file in the folder

Files must be inside the folder (no '..', no absolute paths, no links that
lead out). Each folder becomes one torrent, hashed once and cached in out/.

Check your work with:  boottorrent check
`

// ErrProjectExists is returned by Init for a folder that has a project.
var ErrProjectExists = errors.New("a boottorrent project already exists here")

// Init writes a new project into dir: Boottorrent.yaml, oss/ and
// oss/README.md. It refuses to touch a folder that already holds a
// Boottorrent.yaml or a non-empty oss/, and writes nothing in that case.
func Init(dir, iface, addr string) error {
	file := filepath.Join(dir, FileName)
	if _, err := os.Stat(file); err == nil {
		return fmt.Errorf("%w: %s exists; edit it, or choose another folder", ErrProjectExists, file)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	ossDir := filepath.Join(dir, "oss")
	if ents, err := os.ReadDir(ossDir); err == nil && len(ents) > 0 {
		return fmt.Errorf("%w: %s is not empty; choose another folder", ErrProjectExists, ossDir)
	}
	if err := os.MkdirAll(ossDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", ossDir, err)
	}
	if err := writeNew(filepath.Join(ossDir, "README.md"), OSReadme); err != nil {
		return err
	}
	return writeNew(file, Skeleton(iface, addr))
}

// writeNew writes a file that must not exist yet, atomically (a temp file
// renamed into place), so an interrupted init never leaves half a file.
func writeNew(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s appeared meanwhile", ErrProjectExists, path)
		}
		return err
	}
	return nil
}

// DetectLAN guesses the interface and address `init` writes: the first
// interface that is up, not loopback, with an IPv4 address.
func DetectLAN(h Host) (iface, addr string) {
	if h.Interfaces == nil {
		return "", ""
	}
	ifs, err := h.Interfaces()
	if err != nil {
		return "", ""
	}
	for _, i := range ifs {
		if !i.Up || i.Loopback {
			continue
		}
		for _, a := range i.Addrs {
			if a.Addr().Is4() {
				return i.Name, a.Addr().String()
			}
		}
	}
	return "", ""
}
