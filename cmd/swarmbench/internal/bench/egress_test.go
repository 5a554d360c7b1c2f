package bench

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// testdata/nft-list-counters.json is what `nft -j list counters table
// netdev swarmbench_count` (nftables 1.0.6) printed in a throw-away
// namespace with countRules loaded on the receiving end of a veth, after
// an HTTP download of 3000000 bytes from port 8080, 3000100 bytes from
// port 6881 and two pings, with the veth's offloads on (hence about 100
// packets for 3 MB: a GSO packet crosses a veth whole).
func TestParseNFTCounters(t *testing.T) {
	real, err := os.ReadFile("testdata/nft-list-counters.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, in string
		want     EgressKinds
		err      string
	}{
		{name: "real", in: string(real), want: EgressKinds{
			KindSeederData:  {Bytes: 3005356, Packets: 103},
			KindSeederSmall: {Bytes: 316, Packets: 4},
			KindHTTP:        {Bytes: 3005101, Packets: 94},
			KindOther:       {Bytes: 168, Packets: 2},
		}},
		{name: "other tables and names left out", in: `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
			{"counter": {"family": "netdev", "name": "seeder_data", "table": "swarmbench_count", "handle": 2, "packets": 1, "bytes": 1500}},
			{"counter": {"family": "netdev", "name": "seeder_small", "table": "swarmbench_count", "handle": 3, "packets": 2, "bytes": 104}},
			{"counter": {"family": "netdev", "name": "http", "table": "swarmbench_count", "handle": 4, "packets": 0, "bytes": 0}},
			{"counter": {"family": "netdev", "name": "other", "table": "swarmbench_count", "handle": 5, "packets": 3, "bytes": 990}},
			{"counter": {"family": "netdev", "name": "spare", "table": "swarmbench_count", "handle": 6, "packets": 9, "bytes": 9}},
			{"counter": {"family": "ip", "name": "http", "table": "swarmbench_count", "handle": 2, "packets": 9, "bytes": 9}},
			{"counter": {"family": "netdev", "name": "http", "table": "elsewhere", "handle": 2, "packets": 9, "bytes": 9}}]}`,
			want: EgressKinds{
				KindSeederData:  {Bytes: 1500, Packets: 1},
				KindSeederSmall: {Bytes: 104, Packets: 2},
				KindHTTP:        {},
				KindOther:       {Bytes: 990, Packets: 3},
			}},
		{name: "missing counters", in: `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
			{"counter": {"family": "netdev", "name": "http", "table": "swarmbench_count", "handle": 4, "packets": 0, "bytes": 0}}]}`,
			err: "lacks counters seeder_data, seeder_small, other"},
		{name: "empty table", in: `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}]}`, err: "lacks counters"},
		{name: "not JSON", in: `Error: No such file or directory`, err: "nft -j list counters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseNFTCounters([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func FuzzParseNFTCounters(f *testing.F) {
	if real, err := os.ReadFile("testdata/nft-list-counters.json"); err == nil {
		f.Add(real)
	}
	f.Add([]byte(`{"nftables": [{"counter": {"family": "netdev", "name": "http", "table": "swarmbench_count", "packets": -1, "bytes": 1e3}}]}`))
	f.Add([]byte(`{"nftables": [{"counter": null}, 7]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := parseNFTCounters(data)
		if err == nil && len(k) != len(egressKinds) {
			t.Errorf("%d kinds without an error, want %d", len(k), len(egressKinds))
		}
	})
}

func TestEgressKindsSub(t *testing.T) {
	before := EgressKinds{KindSeederData: {Bytes: 1000, Packets: 1}, KindHTTP: {Bytes: 50, Packets: 1}, KindOther: {}}
	after := EgressKinds{KindSeederData: {Bytes: 9000, Packets: 7}, KindSeederSmall: {Bytes: 52, Packets: 1}, KindHTTP: {Bytes: 50, Packets: 1}, KindOther: {Bytes: 300, Packets: 1}}
	want := EgressKinds{KindSeederData: {Bytes: 8000, Packets: 6}, KindSeederSmall: {Bytes: 52, Packets: 1}, KindHTTP: {}, KindOther: {Bytes: 300, Packets: 1}}
	if got := after.Sub(before); !reflect.DeepEqual(got, want) {
		t.Errorf("Sub = %v, want %v", got, want)
	}
	if got := want.Bytes(); got != 8352 {
		t.Errorf("Bytes = %d, want 8352", got)
	}
}

// The script's rules are what the report's kinds promise: first match
// wins, from the seeder's data down to every other IPv4 packet, counted
// on dev before lossRules' chain there drops anything.
func TestCountRules(t *testing.T) {
	r := countRules("v7")
	for _, want := range []string{
		"table netdev swarmbench_count {",
		"counter seeder_data {", "counter seeder_small {", "counter http {", "counter other {",
		`type filter hook ingress device "v7" priority -10; policy accept;`,
		`meta protocol ip tcp sport 6881 ip length > 256 counter name "seeder_data" accept
		meta protocol ip tcp sport 6881 counter name "seeder_small" accept
		meta protocol ip tcp sport 8080 counter name "http" accept
		meta protocol ip counter name "other"
`,
	} {
		if !strings.Contains(r, want) {
			t.Errorf("countRules lacks %q:\n%s", want, r)
		}
	}
}
