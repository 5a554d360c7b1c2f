package metrics

import "io"

// readFrom copies r to w through w's ReadFrom when it has one (net/http's
// writer uses sendfile for files), else with io.Copy.
func readFrom(w io.Writer, r io.Reader) (int64, error) {
	if rf, ok := w.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w, r)
}
