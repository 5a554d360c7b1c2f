package client

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

func TestDecodeKeys(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []key
		rest string
	}{
		{"\x1b[A\x1b[B", []key{keyUp, keyDown}, ""},
		{"\x1bOA\x1bOB", []key{keyUp, keyDown}, ""}, // application cursor mode
		{"\r", []key{keyEnter}, ""},
		{"\n", []key{keyEnter}, ""},
		{"3", []key{keyDigit0 + 3}, ""},
		{"kj", []key{keyUp, keyDown}, ""},
		{"r", []key{keyRescue}, ""},
		{"x", []key{keyOther}, ""},
		{"\x1b[1;5A", []key{keyOther}, ""}, // ctrl-up: not an arrow we use, but consumed whole
		{"\x1b", nil, "\x1b"},              // cut sequence: kept for the next read
		{"\x1b[", nil, "\x1b["},
		{"1\x1b[", []key{keyDigit0 + 1}, "\x1b["},
		{"\x1bx", []key{keyOther, keyOther}, ""},
	} {
		got, rest := decodeKeys([]byte(tc.in))
		if !reflect.DeepEqual(got, tc.want) || string(rest) != tc.rest {
			t.Errorf("decodeKeys(%q) = %v, %q; want %v, %q", tc.in, got, rest, tc.want, tc.rest)
		}
	}
}

func menuBoot(timeoutMS int64) *bootapi.Boot {
	return &bootapi.Boot{DefaultOS: "two", TimeoutMS: timeoutMS, Menu: []bootapi.OS{
		{Name: "one", DispName: "One"}, {Name: "two", DispName: "Two"}, {Name: "three", DispName: "Three"},
	}}
}

func TestMenuCountdownBootsDefault(t *testing.T) {
	m := newMenu(menuBoot(3000), "")
	if m.selected().Name != "two" || !m.counting {
		t.Fatalf("start: sel %s counting %v", m.selected().Name, m.counting)
	}
	if !strings.Contains(m.status(), "Booting Two in 3 s") {
		t.Errorf("status %q", m.status())
	}
	for i := 0; i < 11; i++ {
		if a := m.tick(250 * time.Millisecond); a != actNone {
			t.Fatalf("tick %d: %v before the timeout", i, a)
		}
	}
	if a := m.tick(250 * time.Millisecond); a != actBoot || m.selected().Name != "two" {
		t.Fatalf("at the timeout: %v %s", a, m.selected().Name)
	}
}

func TestMenuKeys(t *testing.T) {
	m := newMenu(menuBoot(3000), "")
	if a := m.key(keyOther); a != actRedraw || m.counting {
		t.Fatalf("any key must stop the countdown: %v counting %v", a, m.counting)
	}
	if a := m.tick(time.Hour); a != actNone {
		t.Fatal("the countdown went on after a key")
	}
	if !strings.Contains(m.status(), "Selected: Two") {
		t.Errorf("status %q", m.status())
	}
	m.key(keyDown)
	m.key(keyDown) // wraps to the first
	if m.selected().Name != "one" {
		t.Fatalf("down down from two: %s", m.selected().Name)
	}
	m.key(keyUp) // wraps to the last
	if m.selected().Name != "three" {
		t.Fatalf("up from one: %s", m.selected().Name)
	}
	if a := m.key(keyEnter); a != actBoot || m.selected().Name != "three" {
		t.Fatalf("enter: %v %s", a, m.selected().Name)
	}
	if a := m.key(keyDigit0 + 1); a != actBoot || m.selected().Name != "one" {
		t.Fatalf("digit 1: %v %s", a, m.selected().Name)
	}
	if a := m.key(keyDigit0 + 9); a == actBoot {
		t.Fatal("digit 9 with 3 items booted")
	}
	if a := m.key(keyRescue); a != actRescue {
		t.Fatalf("r: %v", a)
	}
}

func TestMenuWaitsForever(t *testing.T) {
	m := newMenu(menuBoot(-1), "last failure")
	if m.counting || m.tick(24*time.Hour) != actNone {
		t.Fatal("a negative timeout must wait for a key")
	}
	r := m.render()
	for _, s := range []string{"> 2. Two", "  1. One", "last attempt: last failure", "rescue shell"} {
		if !strings.Contains(r, s) {
			t.Errorf("render lacks %q:\n%s", s, r)
		}
	}
}

func FuzzDecodeKeys(f *testing.F) {
	for _, s := range []string{"\x1b[A", "\x1bOB\r", "123", "\x1b[1;5A", "\x1b", "r\x7f"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, rest := decodeKeys(b)
		if len(keys) > len(b) || len(rest) > 2 {
			t.Fatalf("%q: %d keys, rest %q", b, len(keys), rest)
		}
		m := newMenu(menuBoot(1000), "")
		for _, k := range keys {
			m.key(k)
			if m.sel < 0 || m.sel >= len(m.items) {
				t.Fatalf("selection %d out of range", m.sel)
			}
		}
	})
}

// TestMenuKeysOfOneRead: arrows and Enter arriving in one read (a fast
// typist, or a serial line) boot the OS the arrows chose.
func TestMenuKeysOfOneRead(t *testing.T) {
	m := newMenu(menuBoot(3000), "")
	keys, _ := decodeKeys([]byte("\x1b[B\x1b[A\x1b[A\r2"))
	if a := m.keys(keys); a != actBoot || m.selected().Name != "one" {
		t.Fatalf("got %v on %s, want boot on one", a, m.selected().Name)
	}
	keys, _ = decodeKeys([]byte("\x1b[Bx"))
	if a := m.keys(keys); a != actRedraw {
		t.Fatalf("got %v, want redraw", a)
	}
}
