package netboot

import (
	"fmt"
	"strings"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// ScriptOptions is what the boot script is made of.
type ScriptOptions struct {
	// Base is the HTTP listener's URL, e.g. http://10.0.0.1:8080.
	Base string
	// MAC is the validated MAC from the request; empty lets iPXE fill in
	// ${net0/mac} itself.
	MAC string
	// Cmdline is appended to the kernel command line (config
	// client.cmdline). It is the administrator's, not the network's.
	Cmdline string
	// RetryDelaySeconds is how long iPXE waits before trying again after a
	// failed download (default 5).
	RetryDelaySeconds int
}

// initrdName is the name iPXE gives the client initramfs. Debian 12's iPXE
// on UEFI hands the kernel its initrd only when the command line names it
// (initrd=<name>); BIOS ignores the argument.
const initrdName = "initramfs"

// BootScript renders the iPXE script that loads the boot client.
//
// iPXE runs it after its own DHCP succeeded. It retries forever: a download
// that fails (server restarted, link flapped, address lost) frees what was
// loaded, waits, takes a fresh DHCP lease (retrying DHCP itself until it
// gets one) and starts over, so a machine is never left at a dead iPXE
// prompt. Values from the request never reach the script except the MAC,
// which has been validated to hex digits and colons.
func BootScript(o ScriptOptions) string {
	delay := o.RetryDelaySeconds
	if delay <= 0 {
		delay = 5
	}
	mac := "${net0/mac}"
	if o.MAC != "" {
		mac = o.MAC
	}
	cmdline := fmt.Sprintf("initrd=%s console=tty0 console=ttyS0,115200 %s=%s %s=%s",
		initrdName, bootapi.ArgServer, o.Base, bootapi.ArgMAC, mac)
	if c := strings.TrimSpace(sanitizeCmdline(o.Cmdline)); c != "" {
		cmdline += " " + c
	}
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "# boottorrent: load the boot client (MAC %s)\n", mac)
	b.WriteString(":load\n")
	b.WriteString("echo boottorrent: loading the boot client from " + o.Base + "\n")
	fmt.Fprintf(&b, "kernel %s%s %s || goto retry\n", o.Base, bootapi.PathClientKernel, cmdline)
	fmt.Fprintf(&b, "initrd --name %s %s%s || goto retry\n", initrdName, o.Base, bootapi.PathClientInitramfs)
	b.WriteString("boot || goto retry\n")
	b.WriteString(":retry\n")
	fmt.Fprintf(&b, "echo boottorrent: download failed; retrying in %d s\n", delay)
	b.WriteString("imgfree\n")
	fmt.Fprintf(&b, "sleep %d\n", delay)
	b.WriteString(":dhcp\n")
	b.WriteString("dhcp && goto load\n")
	b.WriteString("echo boottorrent: no DHCP answer; retrying\n")
	fmt.Fprintf(&b, "sleep %d\n", delay)
	b.WriteString("goto dhcp\n")
	return b.String()
}

// sanitizeCmdline keeps an administrator's cmdline on one line: a newline
// would end the iPXE command and start another.
func sanitizeCmdline(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r < 0x20 {
			return ' '
		}
		return r
	}, s)
}
