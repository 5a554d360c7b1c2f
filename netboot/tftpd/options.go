package tftpd

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/pin/tftp/v3"
)

// normalizeOptions fixes what pin/tftp v3.2.0 gets wrong in a read
// request's options before the library answers them:
//
//   - RFC 2347: option names are case-insensitive. The library keeps the
//     names as sent and only knows "blksize" and "tsize", so "BLKSIZE"
//     was silently dropped; names are lower-cased here (the first of two
//     spellings of one option wins).
//   - RFC 2349: in a read request tsize must be a decimal number (0); the
//     library echoed any value ("tsize abc") back in the OACK. A bad value
//     is dropped, so the option is not acknowledged, as RFC 2347 allows
//     for an option the server does not accept; a good one is answered
//     with the file's real size (SetSize, called by the caller).
//   - RFC 2348: a blksize that is not a number is dropped (the library
//     does this itself; kept here so the rule is in one place).
//
// The options live in an unexported field of the library's transfer; the
// library offers no other hook before the OACK is sent, and wrapping the
// socket would cost the per-packet destination address and MTU that the
// library reads only from a *net.UDPConn. TestOptionNamesAnyCase fails if
// an upgrade moves the field, and then the server simply answers the raw
// options again. It reports whether the options could be reached.
func normalizeOptions(rf tftp.OutgoingTransfer) bool {
	v := reflect.ValueOf(rf)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return false
	}
	f := v.Elem().FieldByName("opts")
	if !f.IsValid() || f.Kind() != reflect.Map || f.Type().Key().Kind() != reflect.String || f.Type().Elem().Kind() != reflect.String {
		return false
	}
	m := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem()
	if m.IsNil() {
		return true
	}
	opts := map[string]string{}
	iter := m.MapRange()
	var keys []string
	for iter.Next() {
		keys = append(keys, iter.Key().String())
		opts[iter.Key().String()] = iter.Value().String()
	}
	clean := cleanOptions(keys, opts)
	for _, k := range keys {
		m.SetMapIndex(reflect.ValueOf(k).Convert(f.Type().Key()), reflect.Value{})
	}
	for k, val := range clean {
		m.SetMapIndex(reflect.ValueOf(k).Convert(f.Type().Key()), reflect.ValueOf(val).Convert(f.Type().Elem()))
	}
	return true
}

// cleanOptions is the pure half of normalizeOptions: lower-case names,
// drop values that are not decimal numbers for the numeric options.
func cleanOptions(keys []string, opts map[string]string) map[string]string {
	out := map[string]string{}
	// A stable order, so that "the first spelling wins" means the same
	// on every run: the exact lower-case spelling first, then by name.
	ordered := slices.Clone(keys)
	slices.SortFunc(ordered, func(a, b string) int {
		la, lb := a == strings.ToLower(a), b == strings.ToLower(b)
		switch {
		case la && !lb:
			return -1
		case lb && !la:
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, k := range ordered {
		name := strings.ToLower(k)
		if _, dup := out[name]; dup {
			continue
		}
		val := opts[k]
		switch name {
		case "tsize", "blksize", "timeout":
			if n, err := strconv.ParseUint(val, 10, 63); err != nil || len(val) > 20 || (name != "tsize" && n == 0) {
				continue
			}
		}
		out[name] = val
	}
	return out
}
