package client

import (
	"fmt"
	"strings"
	"time"

	"github.com/boottorrent/boottorrent/initramfs/bootapi"
)

// key is one decoded key press on the console.
type key int

const (
	keyNone key = iota
	keyUp
	keyDown
	keyEnter
	keyRescue // 'r': the rescue shell
	keyOther
	keyDigit0 // keyDigit0+n is the digit n
)

// decodeKeys turns console bytes into keys. An escape sequence cut at the
// end of buf is returned in rest, to be completed by the next read. VT100
// and Linux console arrows (ESC [ A, ESC O A) and vi keys (k, j) move.
func decodeKeys(buf []byte) (keys []key, rest []byte) {
	for i := 0; i < len(buf); i++ {
		c := buf[i]
		switch {
		case c == 0x1b:
			if i+1 >= len(buf) {
				return keys, buf[i:]
			}
			if buf[i+1] != '[' && buf[i+1] != 'O' {
				keys = append(keys, keyOther)
				continue
			}
			if i+2 >= len(buf) {
				return keys, buf[i:]
			}
			switch buf[i+2] {
			case 'A':
				keys = append(keys, keyUp)
			case 'B':
				keys = append(keys, keyDown)
			default:
				keys = append(keys, keyOther)
			}
			i += 2
			// Skip the rest of a longer sequence (ESC [ 1 ; 5 A …).
			for i+1 < len(buf) && buf[i] >= '0' && buf[i] <= ';' {
				i++
			}
		case c == '\r' || c == '\n':
			keys = append(keys, keyEnter)
		case c >= '1' && c <= '9':
			keys = append(keys, keyDigit0+key(c-'0'))
		case c == 'k' || c == 'K':
			keys = append(keys, keyUp)
		case c == 'j' || c == 'J':
			keys = append(keys, keyDown)
		case c == 'r' || c == 'R':
			keys = append(keys, keyRescue)
		default:
			keys = append(keys, keyOther)
		}
	}
	return keys, nil
}

// action is what the menu decided.
type action int

const (
	actNone action = iota
	actBoot
	actRescue
	actRedraw
)

// menu is the boot menu's logic, without any I/O: the console loop feeds
// it keys and clock ticks and draws it.
type menu struct {
	items    []bootapi.OS
	sel      int
	left     time.Duration // countdown; meaningful while counting
	counting bool
	note     string // why the menu is shown again (the last failure)
}

// newMenu selects the default OS and starts the countdown. A negative
// timeout waits for a key forever.
func newMenu(b *bootapi.Boot, note string) *menu {
	m := &menu{items: b.Menu, left: b.Timeout(), counting: b.TimeoutMS >= 0, note: note}
	for i, o := range b.Menu {
		if o.Name == b.DefaultOS {
			m.sel = i
		}
	}
	return m
}

// selected is the OS under the cursor.
func (m *menu) selected() *bootapi.OS { return &m.items[m.sel] }

// key handles one key press: any key stops the countdown.
func (m *menu) key(k key) action {
	wasCounting := m.counting
	m.counting = false
	switch {
	case k == keyUp:
		m.sel = (m.sel + len(m.items) - 1) % len(m.items)
	case k == keyDown:
		m.sel = (m.sel + 1) % len(m.items)
	case k == keyEnter:
		return actBoot
	case k == keyRescue:
		return actRescue
	case k > keyDigit0:
		n := int(k - keyDigit0)
		if n <= len(m.items) {
			m.sel = n - 1
			return actBoot
		}
	case wasCounting:
		return actRedraw
	default:
		return actNone
	}
	return actRedraw
}

// keys handles the keys of one read: a boot or rescue ends it (keys
// typed ahead after Enter are dropped); otherwise a redraw if any key
// asked for one.
func (m *menu) keys(ks []key) action {
	act := actNone
	for _, k := range ks {
		switch a := m.key(k); a {
		case actBoot, actRescue:
			return a
		case actRedraw:
			act = a
		}
	}
	return act
}

// tick advances the countdown; it boots the selection when it runs out.
func (m *menu) tick(d time.Duration) action {
	if !m.counting {
		return actNone
	}
	m.left -= d
	if m.left <= 0 {
		m.left = 0
		return actBoot
	}
	return actNone
}

// render draws the whole menu.
func (m *menu) render() string {
	var b strings.Builder
	b.WriteString("\r\n boottorrent — choose the operating system to boot\r\n\r\n")
	for i, o := range m.items {
		mark := "  "
		if i == m.sel {
			mark = "> "
		}
		fmt.Fprintf(&b, " %s%d. %s\r\n", mark, i+1, o.DispName)
	}
	b.WriteString("\r\n Up/Down or number to choose, Enter to boot, r for a rescue shell\r\n")
	if m.note != "" {
		fmt.Fprintf(&b, " last attempt: %s\r\n", m.note)
	}
	return b.String()
}

// status is the countdown line, redrawn in place every second.
func (m *menu) status() string {
	if !m.counting {
		return fmt.Sprintf("\r Selected: %s (press Enter)                    ", m.selected().DispName)
	}
	return fmt.Sprintf("\r Booting %s in %d s (any key stops)      ", m.selected().DispName, int((m.left+time.Second-1)/time.Second))
}
