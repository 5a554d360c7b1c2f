package bench

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// writeRandom writes n pseudo-random bytes (incompressible, so no layer
// can cheat by compressing).
func writeRandom(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var seed [32]byte
	copy(seed[:], "boottorrent swarmbench image....")
	src := rand.NewChaCha8(seed)
	if _, err := io.CopyN(f, src, n); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteProject writes a boottorrent project with full DHCP on the
// benchmark LAN and one OS of size random bytes, and returns the bytes a
// client downloads (the image plus the OS's config.yaml).
func WriteProject(dir string, size int64, seed time.Duration) (int64, error) {
	osDir := filepath.Join(dir, "oss", osName)
	if err := os.MkdirAll(osDir, 0o755); err != nil {
		return 0, err
	}
	cfg := fmt.Sprintf(`# Written by swarmbench: a download-only OS (the client runs with --no-kexec).
dispname: swarmbench %d-byte image
method: bin
bin: %s
`, size, imageName)
	if err := os.WriteFile(filepath.Join(osDir, "config.yaml"), []byte(cfg), 0o644); err != nil {
		return 0, err
	}
	if err := writeRandom(filepath.Join(osDir, imageName), size); err != nil {
		return 0, err
	}
	bt := fmt.Sprintf(`# Written by swarmbench for its emulated LAN.
version: 1
server:
  interface: eth0
  address: %s
dhcp:
  mode: full
  range: %s
tftp:
  enabled: false
boot:
  default_os: %s
  timeout: 0s
  seed_time: %s
`, ServerPrefix.Addr(), LeaseRange, osName, seed)
	if err := os.WriteFile(filepath.Join(dir, "Boottorrent.yaml"), []byte(bt), 0o644); err != nil {
		return 0, err
	}
	return size + int64(len(cfg)), nil
}

// shmDir is where clients keep what they download: in RAM, like the real
// boot client, so the disk does not take part in the measurement.
func shmDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}
