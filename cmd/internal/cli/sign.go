package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"aead.dev/minisign"
	"golang.org/x/sys/unix"

	"github.com/boottorrent/boottorrent/config"
	"github.com/boottorrent/boottorrent/oss"
	"github.com/boottorrent/boottorrent/oss/manifest"
	"github.com/boottorrent/boottorrent/seeder"
)

// passwordEnv names the environment variable a secret key's password may
// come from (scripts, CI); --password-file and a prompt on a terminal are
// the others.
const passwordEnv = "BOOTTORRENT_KEY_PASSWORD"

func runSign(env *Env, args []string) error {
	fs := newFlags(env, "sign", "boottorrent sign [--dir DIR] oss/NAME --key SECRET [--version V]",
		`Writes oss/NAME/manifest.json and its minisign signature manifest.json.minisig:
the SHA-256 of every file a boot client downloads, the torrent's info hash
(computed as start does, cached under out/), the boot settings of config.yaml,
and the OS name, version and date in the signed trusted comment.

SECRET is a minisign secret key (minisign -G, or boottorrent keygen). An
encrypted key's password is asked on the terminal, or read from
--password-file or $`+passwordEnv+`.
Verify with Debian's minisign: minisign -Vm oss/NAME/manifest.json -p KEY.pub`)
	dir := fs.String("dir", "", "project folder (default: the folder holding oss/NAME, else the current folder)")
	key := fs.String("key", "", "minisign secret key file")
	version := fs.String("version", "", "the OS's version, one word (default: the date, e.g. 20261207T100000Z)")
	pwFile := fs.String("password-file", "", "read the secret key's password from this file (first line)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *key == "" {
		fmt.Fprintln(env.Stderr, "boottorrent sign: name one OS and the key, e.g. boottorrent sign oss/debian --key ~/.minisign/lab.key")
		return errUsage
	}
	now := time.Now().UTC().Truncate(time.Second)
	if *version == "" {
		*version = manifest.DefaultVersion(now)
	}
	if !manifest.ValidVersion(*version) {
		return fmt.Errorf("--version %q: use one word of letters, digits and . _ + ~ - (at most 64)", *version)
	}
	name, projDir := osArg(pos[0], *dir)
	if projDir != "" && !filepath.IsAbs(projDir) {
		wd, err := env.Getwd()
		if err != nil {
			return err
		}
		projDir = filepath.Join(wd, projDir)
	}
	p, err := loadProject(env, projDir, func(w string) { fmt.Fprintf(env.Stderr, "warning: %s\n", w) })
	if err != nil {
		return err
	}
	o := p.OS(name)
	if o == nil {
		return fmt.Errorf("no OS %q in %s/oss", name, p.Dir)
	}
	sec, err := manifest.ReadSecretKey(*key, passwordSource(env, *pwFile))
	if err != nil {
		return fmt.Errorf("secret key: %w", err)
	}
	ctx := context.Background()
	fmt.Fprintf(env.Stdout, "reading %s (%s, %d files)\n", o.Name, humanBytes(o.Size), len(o.Files))
	private, public, err := seeder.InfoHashes(ctx, p, o, 0)
	if err != nil {
		return err
	}
	files, err := manifest.HashFiles(o.Dir, o.Files)
	if err != nil {
		return fmt.Errorf("OS %s: %w", o.Name, err)
	}
	m := &manifest.Manifest{Format: manifest.Format, Name: o.Name, Version: *version, Date: now,
		InfoHash: private.HexString(), PublicInfoHash: public.HexString(), Boot: o.ManifestBoot(), Files: files}
	body, sig, err := manifest.Sign(sec, m)
	if err != nil {
		return err
	}
	mp := filepath.Join(o.Dir, manifest.FileName)
	if err := oss.WriteFileAtomic(mp, body); err != nil {
		return err
	}
	if err := oss.WriteFileAtomic(filepath.Join(o.Dir, manifest.SigName), sig); err != nil {
		return err
	}
	id := manifest.KeyID(sec.ID())
	fmt.Fprintf(env.Stdout, "signed %s: version %s, %s, key %s, %d files, info hash %s\n  %s\n  %s\n",
		o.Name, m.Version, m.Date.Format(time.RFC3339), id, len(files), m.InfoHash, mp, mp+".minisig")
	if !trusted(p, sec.ID()) {
		fmt.Fprintf(env.Stdout, "note: key %s is not in trust.keys of %s: start and the clients will not trust this signature until its public key is listed there\n", id, p.File)
	}
	return nil
}

// osArg splits "oss/NAME" (or "NAME") into the OS name and the project
// folder: --dir when given, else the folder holding oss/ when the
// argument is a path into one.
func osArg(arg, dir string) (name, project string) {
	clean := filepath.Clean(arg)
	name = filepath.Base(clean)
	if dir != "" {
		return name, dir
	}
	if parent := filepath.Dir(clean); filepath.Base(parent) == "oss" {
		return name, filepath.Dir(parent)
	}
	return name, ""
}

func trusted(p *config.Project, id uint64) bool {
	for _, k := range p.Config.Trust.PublicKeys {
		if pk, err := manifest.ParseKey([]byte(k)); err == nil && pk.ID() == id {
			return true
		}
	}
	return false
}

// passwordSource returns how an encrypted key's password is read:
// --password-file, then $BOOTTORRENT_KEY_PASSWORD, then a prompt when
// stdin is a terminal.
func passwordSource(env *Env, file string) func() (string, error) {
	return func() (string, error) {
		if file != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				return "", fmt.Errorf("--password-file: %w", err)
			}
			line, _, _ := strings.Cut(string(b), "\n")
			return strings.TrimRight(line, "\r"), nil
		}
		if pw, ok := os.LookupEnv(passwordEnv); ok {
			return pw, nil
		}
		return promptPassword(env, "password of the secret key: ")
	}
}

// promptPassword reads a line from the terminal on stdin with echo off.
func promptPassword(env *Env, prompt string) (string, error) {
	fd := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", fmt.Errorf("the secret key is encrypted and stdin is not a terminal: use --password-file or $%s", passwordEnv)
	}
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	noEcho.Lflag |= unix.ICANON
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(env.Stderr, prompt)
	line, err := bufio.NewReader(io.LimitReader(os.Stdin, 4096)).ReadString('\n')
	fmt.Fprintln(env.Stderr)
	if err != nil && line == "" {
		return "", fmt.Errorf("read password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func runKeygen(env *Env, args []string) error {
	fs := newFlags(env, "keygen", "boottorrent keygen --out PREFIX [--no-password]",
		`Makes a minisign key pair for signing OSes: PREFIX.key (secret, mode 0600,
encrypted with a password unless --no-password) and PREFIX.pub (list it in
trust.keys). The files are the same as Debian's minisign -G writes; either tool
signs and verifies with them.`)
	out := fs.String("out", "", "path prefix of the key files")
	noPW := fs.Bool("no-password", false, "store the secret key unencrypted (tests; keep the file safe)")
	pwFile := fs.String("password-file", "", "read the new password from this file (first line)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() != 0 {
		fmt.Fprintln(env.Stderr, "boottorrent keygen: give --out PREFIX, e.g. boottorrent keygen --out keys/lab")
		return errUsage
	}
	for _, p := range []string{*out + ".key", *out + ".pub"} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s exists; refusing to replace a key (remove it first, or choose another --out)", p)
		}
	}
	pub, sec, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	secText, _ := sec.MarshalText()
	if !*noPW {
		pw, err := passwordSource(env, *pwFile)()
		if err == nil && *pwFile == "" && os.Getenv(passwordEnv) == "" {
			var again string
			if again, err = promptPassword(env, "the same password again: "); err == nil && again != pw {
				err = errors.New("the passwords differ")
			}
		}
		if err != nil {
			return err
		}
		if pw == "" {
			return errors.New("empty password; give one, or --no-password for an unencrypted key")
		}
		if secText, err = minisign.EncryptKey(pw, sec); err != nil {
			return err
		}
	}
	pubText, _ := pub.MarshalText()
	if err := os.MkdirAll(filepath.Dir(*out), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(*out+".key", append(secText, '\n'), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(*out+".pub", append(pubText, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "key %s\n  secret %s.key (keep it off the appliance if you can)\n  public %s.pub: add it to trust.keys in %s\n",
		manifest.KeyID(pub.ID()), *out, *out, config.FileName)
	return nil
}

// printTrust prints the trust settings and each OS's signature state
// (check): the signature, name, boot settings and file list are checked,
// and the info hash when the hash cache knows it; the SHA-256 of the
// files is checked at start.
func printTrust(w io.Writer, p *config.Project, known map[string]string) {
	t := p.Config.TrustSettings()
	var ids []string
	for _, k := range t.Keys {
		if pk, err := manifest.ParseKey([]byte(k)); err == nil {
			ids = append(ids, manifest.KeyID(pk.ID()))
		}
	}
	keys := "no keys"
	if len(ids) > 0 {
		keys = "keys " + strings.Join(ids, ", ")
	}
	note := ""
	if t.Effective() != t.Policy {
		note = " (no keys: nothing is checked)"
	}
	fmt.Fprintf(w, "\nTrust     policy %s%s; %s (baked into the client)\n", t.Policy, note, keys)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, o := range p.OSes {
		v, _, _, err := seeder.VerifyManifest(p, o, known[o.Name])
		var state string
		switch {
		case err != nil:
			state = "INVALID: " + err.Error()
			if t.Effective() != manifest.PolicyOff {
				state += " — not served"
			}
		case v == nil && t.Effective() == manifest.PolicyRequire:
			state = "unsigned — not served under require"
		case v == nil:
			state = "unsigned"
		default:
			state = fmt.Sprintf("signed by %s, version %s, %s", v.KeyID, v.Version, v.Date.Format(time.RFC3339))
		}
		fmt.Fprintf(tw, "  %s\t%s\n", o.Name, state)
	}
	tw.Flush()
}
