package btlan

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestLANConfigPlainHandshakes: a boot client neither offers nor accepts
// header obfuscation. Allowing it as a fallback let the library dial
// again with MSE after every failed plain handshake (a duplicate
// connection dropped mid-handshake), and those Diffie-Hellman exchanges
// were 8–9 % of each client's CPU in swarmbench.
func TestLANConfigPlainHandshakes(t *testing.T) {
	cfg := LANConfig(0)
	if cfg.HeaderObfuscationPolicy.Preferred || !cfg.HeaderObfuscationPolicy.RequirePreferred {
		t.Errorf("HeaderObfuscationPolicy = %+v, want plain handshakes required", cfg.HeaderObfuscationPolicy)
	}
	if !cfg.Seed || !cfg.DropDuplicatePeerIds || !cfg.DisableUTP || !cfg.NoDHT {
		t.Errorf("LANConfig lost a LAN setting: Seed %v DropDuplicatePeerIds %v DisableUTP %v NoDHT %v",
			cfg.Seed, cfg.DropDuplicatePeerIds, cfg.DisableUTP, cfg.NoDHT)
	}
}

// TestLANConfigStealGrace: a boot client lets a chunk request stay with
// its connection for StealGrace before the library may move it, unless
// the library's environment variable asks for another grace (swarmbench's
// --client-env), which then wins.
func TestLANConfigStealGrace(t *testing.T) {
	t.Setenv(StealGraceEnv, "") // restored after the test
	if err := CheckTorrentEnv(); err != nil {
		t.Errorf("CheckTorrentEnv with %s empty: %v", StealGraceEnv, err)
	}
	if got := LANConfig(0).StealRequestGrace; got != StealGrace {
		t.Errorf("StealRequestGrace = %v with %s empty, want %v", got, StealGraceEnv, StealGrace)
	}
	os.Unsetenv(StealGraceEnv)
	if got := LANConfig(0).StealRequestGrace; got != StealGrace {
		t.Errorf("StealRequestGrace = %v without %s, want %v", got, StealGraceEnv, StealGrace)
	}
	t.Setenv(StealGraceEnv, "250ms")
	if err := CheckTorrentEnv(); err != nil {
		t.Errorf("CheckTorrentEnv with %s=250ms: %v", StealGraceEnv, err)
	}
	if got := LANConfig(0).StealRequestGrace; got != 250*time.Millisecond {
		t.Errorf("StealRequestGrace = %v with %s=250ms, want 250ms", got, StealGraceEnv)
	}
	// The library panics on a value that does not parse; the check turns
	// it into an error naming the variable and the fix.
	t.Setenv(StealGraceEnv, "8 seconds")
	err := CheckTorrentEnv()
	if err == nil || !strings.Contains(err.Error(), StealGraceEnv) || !strings.Contains(err.Error(), "unset") {
		t.Errorf("CheckTorrentEnv with %s=\"8 seconds\" = %v, want an error naming the variable and the fix", StealGraceEnv, err)
	}
}
