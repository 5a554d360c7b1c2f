// Package bootapi is the contract between the boottorrent server and the
// boot client running as /init: the HTTP paths of the one listener, the
// JSON documents they carry and how a machine is named (MAC). It imports
// only the standard library, since it is linked into the client that every
// machine loads over the network, and it knows no policy: what the server
// answers is decided in netboot/bootserver and seeder/swarm.
package bootapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
)

// Paths on the server's HTTP listener (server.http_port). Each part of the
// server registers the routes it serves itself; a test in cmd/internal/cli
// checks that every path declared here is served.
const (
	PathBootScript      = "/boot.ipxe"        // GET ?mac=…: iPXE script (netboot)
	PathClientKernel    = "/client/vmlinuz"   // boot client kernel, Range (netboot)
	PathClientInitramfs = "/client/initramfs" // boot client initramfs, Range (netboot)
	PathBoot            = "/api/v1/boot"      // GET ?mac=…: Boot (netboot/bootserver)
	PathPeers           = "/api/v1/peers"     // GET ?os=…&mac=…: Peers (netboot/bootserver)
	PathReport          = "/api/v1/report"    // POST Report (netboot/bootserver)
	PathMachines        = "/api/v1/machines"  // GET: []Machine (netboot/bootserver)
	PathEvents          = "/api/v1/events"    // GET: Server-Sent Events of the machines (netboot/dashboard)
	PathDashboard       = "/"                 // GET: the operator's page, or a text index for curl (netboot/dashboard)
	PathDashboardFiles  = "/dashboard/"       // GET: the page's script and style (netboot/dashboard)
	PathMetrics         = "/metrics"          // GET: Prometheus text exposition (netboot/metrics)
	PathOSList          = "/api/v1/oss"       // GET: []OS (seeder)
	PathTorrents        = "/torrents/"        // /torrents/<name>.torrent (seeder)
	PathManifests       = "/manifests/"       // /manifests/<name>.json and .json.minisig: signed OS manifests (seeder)
	PathWebSeed         = "/oss/"             // /oss/<name>/<file>, BEP 19 web seed (seeder)
	PathAnnounce        = "/announce"         // HTTP tracker (seeder)
	PathScrape          = "/scrape"           // HTTP tracker scrape (seeder)
)

// Kernel command line keys the iPXE script passes to the boot client.
const (
	ArgServer = "boottorrent.server" // http://IP:PORT of the HTTP listener
	ArgMAC    = "boottorrent.mac"    // MAC of the booting NIC (iPXE ${net0/mac})
)

// OS is one bootable operating system as the server offers it.
type OS struct {
	Name     string `json:"name"`
	DispName string `json:"dispname"`
	Method   string `json:"method"` // kexec, bin, qemu
	Size     int64  `json:"size"`
	InfoHash string `json:"info_hash"` // hex; empty until hashed, and while Problem is set
	// Problem says why the server does not serve the OS now (its files
	// changed on disk after they were verified); empty when it does.
	Problem string `json:"problem,omitempty"`
	Magnet  string `json:"magnet,omitempty"`
	Torrent string `json:"torrent"` // path of the .torrent on the listener
	// Manifest is the path of the OS's signed manifest on the listener
	// (its signature is at Manifest + ".minisig"); empty for an unsigned
	// OS. The client checks it with the keys in its own initramfs.
	Manifest string   `json:"manifest,omitempty"`
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
// nobody else has). ShareCount 0 or 1 means no split. ShareOwners is how
// many of those machines own a share of the pieces (the server decides it,
// seeder/swarm); the machines ranked beyond it get every piece from the
// others.
//
// ReportMS, when set, replaces Boot.ReportMS while the machine downloads:
// the server asks a large class to report less often.
type Peers struct {
	Peers       []string `json:"peers"`
	ShareIndex  int      `json:"share_index"`
	ShareCount  int      `json:"share_count"`
	ShareOwners int      `json:"share_owners,omitempty"`
	ReportMS    int64    `json:"report_interval_ms,omitempty"`
}

// MaxShareCount bounds ShareCount and ShareOwners: more machines than
// this share the seeder's pieces in groups.
const MaxShareCount = 4096

// DefaultShareOwners is the owner cap of a Peers answer without
// share_owners: servers before 2026-12-07 did not send it and their
// clients capped the owners at 64, so a client of this version behaves
// against such a server as their own clients did.
const DefaultShareOwners = 64

// Owners is how many machines own a share: ShareOwners when the server
// sent one, else min(ShareCount, DefaultShareOwners); never more than
// ShareCount.
func (p *Peers) Owners() int {
	if p.ShareOwners > 0 {
		return min(p.ShareCount, p.ShareOwners)
	}
	return min(p.ShareCount, DefaultShareOwners)
}

// OwnedShare is the piece range [from, to) the machine ranked index of
// count asks the seeder for when owners of them own a share: empty for a
// machine ranked at or beyond owners, everything when there is no split.
func OwnedShare(index, count, owners, pieces int) (from, to int) {
	owners = min(count, owners)
	if count > 1 && index >= owners {
		return 0, 0
	}
	return Share(index, owners, pieces)
}

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
	// StageLost is the server's verdict, never reported: a machine that
	// stopped reporting for two report intervals while it downloaded or
	// seeded (netboot/registry). It leaves it when it reports again.
	StageLost = "lost"
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
	if _, err := ParseMAC(r.MAC); err != nil {
		return fmt.Errorf("mac: %w", err)
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

// MAC is a machine's Ethernet address: the one key every part of
// boottorrent uses for a machine. Its String is lower-case with colons.
type MAC [6]byte

func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// ErrBadMAC is returned for a value that is not a 6-byte Ethernet MAC.
var ErrBadMAC = errors.New("not an Ethernet MAC address")

// ParseMAC reads a MAC as iPXE and administrators write it
// (52:54:00:12:34:56 or 52-54-00-12-34-56). Only 6-byte MACs are
// accepted: the value comes from the network and ends up in logs, the
// registry and the boot script. The all-zero address and group addresses
// (broadcast, multicast: the I/G bit set) are no NIC's own address, so
// no machine is known by them.
func ParseMAC(s string) (MAC, error) {
	if len(s) != 17 {
		return MAC{}, fmt.Errorf("%w: %q", ErrBadMAC, Truncate(s, 40))
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return MAC{}, fmt.Errorf("%w: %q", ErrBadMAC, Truncate(s, 40))
	}
	switch m := MAC(hw); {
	case m == MAC{}:
		return MAC{}, fmt.Errorf("%w: %s is the all-zero address", ErrBadMAC, m)
	case m[0]&1 != 0:
		return MAC{}, fmt.Errorf("%w: %s is a broadcast or multicast address", ErrBadMAC, m)
	default:
		return m, nil
	}
}

// MACFromQuery returns the validated mac= value of a raw query string,
// lower-case with colons. A missing mac gives "", nil; a malformed one
// ErrBadMAC.
func MACFromQuery(rawQuery string) (string, error) {
	if len(rawQuery) > 2048 {
		return "", fmt.Errorf("%w: query too long", ErrBadMAC)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadMAC, err)
	}
	v, ok := q["mac"]
	if !ok || len(v) == 0 || v[0] == "" {
		return "", nil
	}
	m, err := ParseMAC(v[0])
	if err != nil {
		return "", err
	}
	return m.String(), nil
}

// Truncate cuts s to n bytes for a log line or an error, marking the cut.
func Truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Machine is one machine as the server knows it: GET PathMachines.
type Machine struct {
	MAC        string  `json:"mac"`
	IP         string  `json:"ip,omitempty"`
	Name       string  `json:"name,omitempty"`
	Arch       string  `json:"arch,omitempty"`
	Stage      string  `json:"stage"`
	OS         string  `json:"os,omitempty"`
	Progress   float64 `json:"progress"` // 0..1 of the OS download
	BytesTotal int64   `json:"bytes_total"`
	BytesDone  int64   `json:"bytes_done"`
	FromPeers  int64   `json:"from_peers"`
	FromSeeder int64   `json:"from_seeder"`
	FromWeb    int64   `json:"from_webseed"`
	Uploaded   int64   `json:"uploaded"`
	Peers      int     `json:"peers"`
	RateBps    float64 `json:"rate_bps"`
	Message    string  `json:"message,omitempty"`
	// StageSince is when the machine entered its current stage (for
	// StageLost: the stage it was lost in, LostFrom).
	StageSince time.Time `json:"stage_since"`
	// LostFrom is the stage a lost machine stopped reporting in.
	LostFrom string `json:"lost_from,omitempty"`
	// ReportMS is how often the machine is expected to report in its
	// stage (0: the server sees the stage itself, no reports expected).
	ReportMS  int64     `json:"report_interval_ms,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Stages holds when each stage was first reached.
	Stages map[string]time.Time `json:"stages"`
}

// Result is the boot client's machine-readable last line on stdout
// (after ResultPrefix) in process mode: the swarm benchmark and the tests
// read it, so it is part of the contract.
type Result struct {
	OS              string  `json:"os"`
	Mode            string  `json:"mode"`             // torrent or http
	Seconds         float64 `json:"seconds"`          // client start → boot
	DownloadSeconds float64 `json:"download_seconds"` // first request → complete
	SeedSeconds     float64 `json:"seed_seconds"`
	Bytes           int64   `json:"bytes"`
	FromPeers       int64   `json:"from_peers"`
	FromSeeder      int64   `json:"from_seeder"`
	FromWeb         int64   `json:"from_webseed"`
	Uploaded        int64   `json:"uploaded"`
	PiecesFailed    int64   `json:"pieces_failed"`
	Wasted          int64   `json:"wasted"` // piece data received twice
	WastedSeeder    int64   `json:"wasted_seeder"`
	Requests        int64   `json:"requests"`
	Withdrawn       int64   `json:"requests_withdrawn"`
	Rejected        int64   `json:"requests_rejected"`
	Attempts        int     `json:"attempts"`
}

// ResultPrefix starts the final line on stdout.
const ResultPrefix = "BOOTTORRENT-RESULT "

// The RAM rule: an OS whose files add up to S bytes needs about
// RAMFactor·S + RAMOverhead bytes of RAM on the machine that boots it. A
// diskless machine holds the client's download (S, laid out as the final
// initrd: initramfs/client/handover.go) and, while kexec_load runs, the
// kexec segment the kernel copies it into (S, from a read-only mapping of
// the file, so the client makes no copy); the new kernel then holds the
// initrd while it unpacks it into a ramfs (the client adds
// rootfstype=ramfs, see bootCmdline). RAMOverhead covers the client's
// kernel, initramfs and process, the kernel being loaded and a margin
// (measured 2026-12-08: the floor was 2·S + 259 MiB; cmd/swarmbench/TUNING.md).
//
// On UEFI machines and under Secure Boot lockdown the client uses
// kexec_file_load (initramfs/client fileLoadOnly), and the
// kernel reads the initrd into a buffer of its own before copying it into
// the segment: three copies at the peak (RAMFactorLockdown). Both check
// (which prints the rule) and the client (which refuses a download that
// cannot boot) use these.
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

// MinRAMLockdown is MinRAM for a machine where the client uses
// kexec_file_load (UEFI, Secure Boot lockdown).
func MinRAMLockdown(size int64) int64 {
	return int64(RAMFactorLockdown*float64(size)) + RAMOverhead
}
