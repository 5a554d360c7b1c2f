// Package bootapi is the contract between the boottorrent server and the
// boot client running as /init: the HTTP paths of the one listener and the
// JSON documents they carry. It imports only the standard library, since it
// is linked into the client that every machine loads over the network.
package bootapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Paths on the server's HTTP listener (server.http_port).
const (
	PathBootScript      = "/boot.ipxe"        // GET ?mac=…: iPXE script (netboot)
	PathClientKernel    = "/client/vmlinuz"   // boot client kernel, Range (netboot)
	PathClientInitramfs = "/client/initramfs" // boot client initramfs, Range (netboot)
	PathBoot            = "/api/v1/boot"      // GET ?mac=…: Boot (netboot)
	PathPeers           = "/api/v1/peers"     // GET ?os=…&mac=…: Peers (netboot)
	PathReport          = "/api/v1/report"    // POST Report (netboot)
	PathMachines        = "/api/v1/machines"  // GET: []Machine (netboot)
	PathOSList          = "/api/v1/oss"       // GET: []OS (seeder)
	PathTorrents        = "/torrents/"        // /torrents/<name>.torrent (seeder)
	PathWebSeed         = "/oss/"             // /oss/<name>/<file>, BEP 19 web seed (seeder)
	PathAnnounce        = "/announce"         // HTTP tracker (seeder)
	PathScrape          = "/scrape"           // HTTP tracker scrape (seeder)
)

// MaskExtension is the BitTorrent extension (BEP 10) by which a boot
// client asks the seeder, on an open connection, to say again what it
// has: the seeder answers each such message with an empty one of its own,
// and the client reads the answer as a Bitfield of the pieces it may ask
// the seeder for (its share, initramfs/client/share.go). Without it,
// changing those pieces meant closing the connection and dialling again,
// which threw away the requests in flight.
const MaskExtension = "boottorrent_mask"

// Kernel command line keys the iPXE script passes to the boot client.
const (
	ArgServer = "boottorrent.server" // http://IP:PORT of the HTTP listener
	ArgMAC    = "boottorrent.mac"    // MAC of the booting NIC (iPXE ${net0/mac})
)

// OS is one bootable operating system as the server offers it.
type OS struct {
	Name     string   `json:"name"`
	DispName string   `json:"dispname"`
	Method   string   `json:"method"` // kexec, bin, qemu
	Size     int64    `json:"size"`
	InfoHash string   `json:"info_hash"` // hex; empty until hashed
	Magnet   string   `json:"magnet,omitempty"`
	Torrent  string   `json:"torrent"` // path of the .torrent on the listener
	Kernel   string   `json:"kernel,omitempty"`
	Initrd   string   `json:"initrd,omitempty"`
	Cmdline  string   `json:"cmdline,omitempty"`
	Bin      string   `json:"bin,omitempty"`
	BinArgs  []string `json:"binargs,omitempty"`
	Args     []string `json:"args,omitempty"`
	Files    []string `json:"files"`
	// InitrdFiles are handed to the booted OS inside its initramfs: the
	// client boots with Initrd, zero padding to 4 bytes and a newc
	// archive holding each File at As (oss/initrdfiles.go).
	InitrdFiles []InitrdFile `json:"initrd_files,omitempty"`
}

// InitrdFile is one file of an OS handed to it in its initramfs.
type InitrdFile struct {
	File string `json:"file"` // relative path in the OS folder (a torrent file)
	As   string `json:"as"`   // absolute path in the booted OS's initramfs
}

// InitrdFilesOf converts any list of {File, As} pairs (oss.InitrdFile)
// to the wire type.
func InitrdFilesOf[T ~struct{ File, As string }](l []T) []InitrdFile {
	var out []InitrdFile
	for _, f := range l {
		out = append(out, InitrdFile(f))
	}
	return out
}

// Boot is what a client needs to show its menu: GET PathBoot?mac=MAC.
type Boot struct {
	MAC       string   `json:"mac"`
	Machine   string   `json:"machine,omitempty"`   // name from machines:
	PinnedOS  string   `json:"pinned_os,omitempty"` // machines: entry's OS: boot it without the menu
	DefaultOS string   `json:"default_os"`          // booted when the countdown ends
	TimeoutMS int64    `json:"timeout_ms"`          // 0 boots at once; <0 waits forever
	SeedMS    int64    `json:"seed_time_ms"`        // seed this long after completing
	ReportMS  int64    `json:"report_interval_ms"`  // how often to POST a Report
	Trackers  []string `json:"trackers,omitempty"`  // announce URLs besides the torrent's
	Menu      []OS     `json:"menu"`
}

// Timeout is TimeoutMS as a duration.
func (b *Boot) Timeout() time.Duration { return time.Duration(b.TimeoutMS) * time.Millisecond }

// SeedTime is SeedMS as a duration.
func (b *Boot) SeedTime() time.Duration { return time.Duration(b.SeedMS) * time.Millisecond }

// Peers answers PathPeers: BitTorrent peers ("ip:port") to dial at once,
// the server's seeder first, then other machines booting the same OS.
//
// ShareIndex and ShareCount rank the asking machine among the machines
// fetching the OS (in the order they started), so that the server's
// uplink sends each piece about once: with Share, the asking machine
// requests from the seeder only its share of the P pieces and gets the
// rest from the other machines (falling back to the seeder for pieces
// nobody else has). The boot client caps how many machines own a share
// (maxOwners in initramfs/client/share.go). ShareCount 0 or 1 means no split.
//
// ReportMS, when set, replaces Boot.ReportMS while the machine downloads:
// the server asks a large class to report less often.
type Peers struct {
	Peers      []string `json:"peers"`
	ShareIndex int      `json:"share_index"`
	ShareCount int      `json:"share_count"`
	ReportMS   int64    `json:"report_interval_ms,omitempty"`
}

// MaxShareCount bounds ShareCount: more machines than this share the
// seeder's pieces in groups.
const MaxShareCount = 4096

// Share returns the piece range [from, to) of share index out of count for
// a torrent of pieces pieces. It returns the whole range when count <= 1
// or the values are out of bounds (a hostile or older server).
func Share(index, count, pieces int) (from, to int) {
	if count <= 1 || count > MaxShareCount || index < 0 || index >= count || pieces <= 0 {
		return 0, max(pieces, 0)
	}
	return index * pieces / count, (index + 1) * pieces / count
}

// Stages a machine goes through, in order. The server records the first
// stages from what it sees (DHCP, TFTP, HTTP); the client reports the rest.
const (
	StageDHCP     = "dhcp"     // PXE DHCP answered
	StageTFTP     = "tftp"     // iPXE fetched over TFTP
	StageIPXE     = "ipxe"     // boot script fetched
	StageClient   = "client"   // client kernel/initramfs fetched
	StageNetwork  = "network"  // client: drivers, link, lease
	StageMenu     = "menu"     // client: showing the menu
	StageDownload = "download" // client: downloading the OS
	StageSeeding  = "seeding"  // client: complete, seeding before boot
	StageBooting  = "booting"  // client: kexec / exec / qemu
	StageFailed   = "failed"   // client: an error it could not recover from alone
)

// Report is POSTed by the client to PathReport every ReportMS and at every
// stage change.
type Report struct {
	MAC        string  `json:"mac"`
	Stage      string  `json:"stage"`
	OS         string  `json:"os,omitempty"`
	ListenPort int     `json:"listen_port,omitempty"` // client's BitTorrent port
	BytesTotal int64   `json:"bytes_total,omitempty"`
	BytesDone  int64   `json:"bytes_done,omitempty"`
	FromPeers  int64   `json:"from_peers,omitempty"`   // payload bytes from other clients
	FromSeeder int64   `json:"from_seeder,omitempty"`  // payload bytes from the server's seeder
	FromWeb    int64   `json:"from_webseed,omitempty"` // payload bytes from the web seed
	Uploaded   int64   `json:"uploaded,omitempty"`
	Peers      int     `json:"peers,omitempty"`
	RateBps    float64 `json:"rate_bps,omitempty"`
	Message    string  `json:"message,omitempty"` // what failed and what to check
}

// MaxReportBytes bounds a report's body; the server refuses larger ones.
const MaxReportBytes = 16 << 10

// Validate checks a report that arrived from the network.
func (r *Report) Validate() error {
	if _, err := net.ParseMAC(r.MAC); err != nil {
		return fmt.Errorf("mac %q: %w", r.MAC, err)
	}
	switch r.Stage {
	case StageNetwork, StageMenu, StageDownload, StageSeeding, StageBooting, StageFailed, StageClient:
	default:
		return fmt.Errorf("unknown stage %q", r.Stage)
	}
	if r.BytesTotal < 0 || r.BytesDone < 0 || r.FromPeers < 0 || r.FromSeeder < 0 || r.FromWeb < 0 || r.Uploaded < 0 || r.Peers < 0 {
		return errors.New("negative counter")
	}
	if r.ListenPort < 0 || r.ListenPort > 65535 {
		return fmt.Errorf("listen_port %d out of range", r.ListenPort)
	}
	if len(r.OS) > 64 || len(r.Message) > 1024 {
		return errors.New("os or message too long")
	}
	return nil
}

// DecodeReport reads and validates one report body.
func DecodeReport(body io.Reader) (*Report, error) {
	var r Report
	dec := json.NewDecoder(io.LimitReader(body, MaxReportBytes+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("decode report: %w", err)
	}
	r.MAC = strings.ToLower(r.MAC)
	return &r, r.Validate()
}

// Machine is one machine as the server knows it: GET PathMachines.
type Machine struct {
	MAC        string    `json:"mac"`
	IP         string    `json:"ip,omitempty"`
	Name       string    `json:"name,omitempty"`
	Arch       string    `json:"arch,omitempty"`
	Stage      string    `json:"stage"`
	OS         string    `json:"os,omitempty"`
	Progress   float64   `json:"progress"` // 0..1 of the OS download
	BytesTotal int64     `json:"bytes_total"`
	BytesDone  int64     `json:"bytes_done"`
	FromPeers  int64     `json:"from_peers"`
	FromSeeder int64     `json:"from_seeder"`
	FromWeb    int64     `json:"from_webseed"`
	Uploaded   int64     `json:"uploaded"`
	Peers      int       `json:"peers"`
	RateBps    float64   `json:"rate_bps"`
	Message    string    `json:"message,omitempty"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
	// Stages holds when each stage was first reached.
	Stages map[string]time.Time `json:"stages"`
}

// The RAM rule: an OS whose files add up to S bytes needs about
// RAMFactor·S + RAMOverhead bytes of RAM on the machine that boots it.
// A diskless machine holds everything in RAM: the client's download (S,
// laid out as the final initrd, initramfs/client/handover.go), and while
// kexec_load runs, the kexec segment the kernel copies it into (S, from a
// mapping of the file: no copy in the client); then the new kernel holds
// the initrd while it unpacks the files out of it. Measured in QEMU on
// 2026-12-08 (BIOS, 822 MiB, a 140 MiB Debian live OS whose initrd is
// 132 MiB): MemTotal 760 MiB, 473–478 MiB available when loading began,
// 239–243 MiB at the lowest (kexec_load used 235 MiB: the segment and
// about 100 MiB for the decompressed kernel); so 2·S + 240 MiB of
// MemTotal at the peak, plus the 62 MiB the firmware and kernel keep out
// of MemTotal and a margin. The new kernel holds the initrd (132 MiB),
// its files (92 MiB) and the OS's own initrd unpacked (146 MiB) at once,
// in a ramfs (the client adds rootfstype=ramfs, initramfs/client
// bootCmdline): 540 MiB, 2·S + 259 MiB, booted it to the login prompt. RAMOverhead covers the client's kernel, initramfs
// and process (about 140 MiB), the kernel being loaded and the reserve.
//
// Under Secure Boot lockdown only kexec_file_load is allowed: the kernel
// reads the initrd into a buffer of its own before copying it into the
// segment, and the same OS used 315 MiB while loading (3·S at the peak):
// RAMFactorLockdown. Both the server (boottorrent check prints the rule)
// and the client (which refuses a download that cannot boot) use these.
const (
	RAMFactor         = 2.0
	RAMFactorLockdown = 3.0
	RAMOverhead       = 384 << 20
)

// MinRAM is the RAM, in bytes, a machine needs to boot an OS of size
// bytes (the RAM rule).
func MinRAM(size int64) int64 {
	return int64(RAMFactor*float64(size)) + RAMOverhead
}

// MinRAMLockdown is MinRAM for a machine under Secure Boot lockdown,
// where the client can only use kexec_file_load.
func MinRAMLockdown(size int64) int64 {
	return int64(RAMFactorLockdown*float64(size)) + RAMOverhead
}
