package bootapi

import (
	"testing"
)

func TestParseMAC(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"52:54:00:AB:cd:01", "52:54:00:ab:cd:01"},
		{"52-54-00-ab-cd-01", "52:54:00:ab:cd:01"},
		{"5254.00ab.cd01", ""},
		{"52:54:00:ab:cd", ""},
		{"52:54:00:ab:cd:01:02:03", ""},
		{"${net0/mac}", ""},
		{"52:54:00:ab:cd:0g", ""},
		{"52:54:00:ab:cd:01\n", ""},
		{"", ""},
		{"00:00:00:00:00:00", ""},
		{"ff:ff:ff:ff:ff:ff", ""},
		{"FF-FF-FF-FF-FF-FF", ""},
		{"01:00:5e:00:00:01", ""},
		{"33:33:00:00:00:01", ""},
		{"02:00:00:00:00:00", "02:00:00:00:00:00"},
	} {
		m, err := ParseMAC(tc.in)
		got := ""
		if err == nil {
			got = m.String()
		}
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("ParseMAC(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestShareRanges(t *testing.T) {
	// Every piece belongs to exactly one share, for any count.
	for _, pieces := range []int{1, 7, 128, 512} {
		for count := 1; count <= 40; count++ {
			owner := make([]int, pieces)
			for i := range count {
				from, to := Share(i, count, pieces)
				for p := from; p < to; p++ {
					owner[p]++
				}
			}
			for p, o := range owner {
				if o != 1 && count > 1 {
					t.Fatalf("pieces=%d count=%d: piece %d in %d shares", pieces, count, p, o)
				}
			}
		}
	}
	// Values a hostile server could send mean "no split".
	for _, c := range [][2]int{{-1, 4}, {4, 4}, {0, 0}, {0, -3}, {0, MaxShareCount + 1}} {
		if from, to := Share(c[0], c[1], 100); from != 0 || to != 100 {
			t.Errorf("Share(%d, %d, 100) = [%d, %d), want the whole range", c[0], c[1], from, to)
		}
	}
}
