package webseed

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// DefaultMaxRanges is the most byte ranges one request may ask of any
// file the appliance serves. Go's http.ServeContent answers every range
// of a multi-range request in one multipart body, so 4,222 one-byte
// ranges of a 4 KB .torrent made a 614 KB answer; BitTorrent web seed
// clients, iPXE and the boot client ask for one range at a time.
const DefaultMaxRanges = 16

// ServeContent is http.ServeContent under the one range rule for every
// file the appliance serves (web seed, .torrent files, the boot client's
// kernel and initramfs): a Range header with more than maxRanges ranges
// (DefaultMaxRanges if maxRanges <= 0) is answered 416 with the size, and
// the returned error says why; anything else is http.ServeContent's
// (RFC 9110 section 14: a malformed header is ignored, an unsatisfiable
// one is a 416).
func ServeContent(w http.ResponseWriter, r *http.Request, name string, modtime time.Time, content io.ReadSeeker, size int64, maxRanges int) error {
	if maxRanges <= 0 {
		maxRanges = DefaultMaxRanges
	}
	if h := r.Header.Get("Range"); h != "" {
		if _, err := ParseRange(h, size, maxRanges); errors.Is(err, ErrTooManyRanges) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			http.Error(w, err.Error(), http.StatusRequestedRangeNotSatisfiable)
			return err
		}
	}
	http.ServeContent(w, r, name, modtime, content)
	return nil
}
