// Package strictyaml decodes YAML configuration files strictly and reports
// every problem at once, each with the file, the line, the field and a fix.
//
// gopkg.in/yaml.v3's KnownFields stops at a terse "field x not found in type
// y"; an administrator editing Boottorrent.yaml wants the dotted key, the
// line and the keys that would be valid, so this package walks the node tree
// itself before decoding.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds a configuration file. The largest real one is a
// Boottorrent.yaml pinning every machine the registry holds (4,096 × about
// 80 bytes ≈ 330 KB); 1 MiB leaves room for comments, while parsing the
// worst 1 MiB file (a flow list of one-letter items) allocates about
// 125 MiB, so no file can exhaust the server's memory before it is refused.
const MaxFileSize = 1 << 20

// ReadFile reads a configuration file of at most MaxFileSize bytes. It
// refuses anything but a regular file (a FIFO, a device reached through a
// symlink, a folder) with a Problems error naming the file. The file is
// opened with O_NONBLOCK so that opening a FIFO never waits for a writer.
// A missing file gives an error that matches fs.ErrNotExist.
func ReadFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, Problems{{File: path, Msg: fmt.Sprintf("cannot be read: %v", errors.Unwrap(err))}}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, Problems{{File: path, Msg: fmt.Sprintf("cannot be read: %v", err)}}
	}
	if what := notRegular(fi.Mode()); what != "" {
		return nil, Problems{{File: path, Msg: fmt.Sprintf("is %s, not a regular file; make it a plain text file (a symlink to one is fine)", what)}}
	}
	if fi.Size() > MaxFileSize {
		return nil, tooBig(path, fi.Size())
	}
	// The file may grow between Stat and the read: read one byte past the
	// limit to notice.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, Problems{{File: path, Msg: fmt.Sprintf("cannot be read: %v", err)}}
	}
	if len(data) > MaxFileSize {
		return nil, tooBig(path, int64(len(data)))
	}
	return data, nil
}

func tooBig(path string, size int64) Problems {
	return Problems{{File: path, Msg: fmt.Sprintf("%d bytes, more than the limit of %d for a configuration file; it should hold settings, not data (keep images and lists of files in the OS folders)", size, MaxFileSize)}}
}

func notRegular(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return ""
	case m.IsDir():
		return "a folder"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeDevice != 0, m&fs.ModeCharDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "a special file"
}

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File  string // path of the file, as the user named it
	Line  int    // 1-based line, 0 when unknown
	Field string // dotted key, e.g. "dhcp.mode"; empty for the whole file
	Msg   string // what is wrong and what would be valid
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is a list of problems; as an error it prints one per line.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Sort orders problems by file, then line, then field.
func (ps Problems) Sort() {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Field < b.Field
	})
}

// Err returns nil for an empty list, else the sorted list as an error.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	ps.Sort()
	return ps
}

// Lines maps a dotted key ("boot.menu", "machines.aa:bb:..") to the line
// where it was written, so that later validation can point at it.
type Lines map[string]int

// Line returns the line of key, or of its nearest written parent.
func (l Lines) Line(key string) int {
	for key != "" {
		if n, ok := l[key]; ok {
			return n
		}
		i := strings.LastIndexByte(key, '.')
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// Parse reads exactly one YAML document from data. An empty file yields a
// nil node and no error. A second document is an error: a stray "---" in a
// config file is almost always a paste mistake.
func Parse(file string, data []byte) (*yaml.Node, Problems) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, Problems{syntaxProblem(file, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Problems{{File: file, Line: extra.Line, Msg: "a second YAML document follows the first; remove the extra '---' and what follows it"}}
	} else if !errors.Is(err, io.EOF) {
		return nil, Problems{syntaxProblem(file, err)}
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

var lineRe = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

func syntaxProblem(file string, err error) Problem {
	msg := err.Error()
	if m := lineRe.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return Problem{File: file, Line: n, Msg: "YAML syntax: " + m[2]}
	}
	return Problem{File: file, Msg: "YAML syntax: " + strings.TrimPrefix(msg, "yaml: ")}
}

// Decode checks node against the yaml tags of out (a pointer to a struct),
// reporting unknown keys and duplicate keys with the valid alternatives,
// then decodes into out, which should hold the defaults already: keys absent
// from the file keep them. Type errors are reported with their lines.
// Fields of type map[string]T are checked per entry against T.
func Decode(file string, node *yaml.Node, out any) (Lines, Problems) {
	lines := Lines{}
	if node == nil {
		return lines, nil
	}
	var ps Problems
	if node.Kind != yaml.MappingNode {
		return lines, Problems{{File: file, Line: node.Line, Msg: "the file must be a mapping of keys to values (key: value)"}}
	}
	walk(file, node, reflect.TypeOf(out).Elem(), "", lines, &ps)
	if len(ps) > 0 {
		return lines, ps
	}
	if err := node.Decode(out); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, e := range te.Errors {
				ps = append(ps, typeProblem(file, e))
			}
		} else {
			ps = append(ps, Problem{File: file, Line: node.Line, Msg: err.Error()})
		}
	}
	return lines, ps
}

var typeRe = regexp.MustCompile(`^line (\d+): (.*)$`)

// typeProblem rewrites yaml.v3's "cannot unmarshal !!str `abc` into int"
// into words an administrator can act on.
func typeProblem(file, e string) Problem {
	p := Problem{File: file}
	if m := typeRe.FindStringSubmatch(e); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		e = m[2]
	}
	r := strings.NewReplacer(
		"cannot unmarshal !!str", "a text value",
		"cannot unmarshal !!int", "a number",
		"cannot unmarshal !!bool", "a true/false value",
		"cannot unmarshal !!seq", "a list",
		"cannot unmarshal !!map", "a mapping",
		"cannot unmarshal !!float", "a decimal number",
		"into int", "is not valid here: a whole number is expected",
		"into bool", "is not valid here: true or false is expected",
		"into string", "is not valid here: a text value is expected",
		"into []string", "is not valid here: a list of text values is expected",
	)
	p.Msg = r.Replace(e)
	return p
}

// A field's `limit:"N"` tag bounds how many entries its YAML list or
// mapping may hold. It is checked on the node tree before anything is
// decoded, so an oversized list costs no more than parsing it.

// Unmarshaler is implemented by field types that check their own node (for
// example durations); walk does not descend into them.
var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func walk(file string, node *yaml.Node, t reflect.Type, prefix string, lines Lines, ps *Problems) {
	walkLimited(file, node, t, 0, prefix, lines, ps)
}

// walkLimited is walk for a field whose list or mapping holds at most limit
// entries (0: no limit).
func walkLimited(file string, node *yaml.Node, t reflect.Type, limit int, prefix string, lines Lines, ps *Problems) {
	if limit > 0 {
		n := len(node.Content)
		if node.Kind == yaml.MappingNode {
			n /= 2
		}
		if (node.Kind == yaml.SequenceNode || node.Kind == yaml.MappingNode) && n > limit {
			*ps = append(*ps, Problem{File: file, Line: lines.Line(prefix), Field: prefix,
				Msg: fmt.Sprintf("%d entries, more than the limit of %d; shorten the list", n, limit)})
			return
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if node.Kind != yaml.MappingNode {
			if node.Tag == "!!null" {
				return
			}
			*ps = append(*ps, Problem{File: file, Line: node.Line, Field: prefix,
				Msg: fmt.Sprintf("must be a mapping with the keys %s", strings.Join(keysOf(t), ", "))})
			return
		}
		fields := fieldsOf(t)
		entries(file, node, prefix, lines, ps, func(k, v *yaml.Node, key string) {
			ft, ok := fields[k.Value]
			if !ok {
				msg := fmt.Sprintf("unknown key; valid keys here are %s", strings.Join(keysOf(t), ", "))
				if s := closest(k.Value, keysOf(t)); s != "" {
					msg = fmt.Sprintf("unknown key; did you mean %q? Valid keys here are %s", s, strings.Join(keysOf(t), ", "))
				}
				*ps = append(*ps, Problem{File: file, Line: k.Line, Field: key, Msg: msg})
				return
			}
			walkLimited(file, v, ft.Type, ft.limit, key, lines, ps)
		})
	case reflect.Map:
		if node.Kind != yaml.MappingNode {
			return // type error reported by Decode
		}
		entries(file, node, prefix, lines, ps, func(_, v *yaml.Node, key string) {
			walk(file, v, t.Elem(), key, lines, ps)
		})
	case reflect.Slice:
		if node.Kind != yaml.SequenceNode {
			return
		}
		for i, item := range node.Content {
			key := fmt.Sprintf("%s[%d]", prefix, i)
			lines[key] = item.Line
			walk(file, item, t.Elem(), key, lines, ps)
		}
	}
}

// entries calls each with every key of a mapping node, its value and its
// dotted path, once per key: a key written twice is a problem (YAML
// would keep the last silently), reported with the line of the first.
// It records each key's line in lines.
func entries(file string, node *yaml.Node, prefix string, lines Lines, ps *Problems, each func(k, v *yaml.Node, key string)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i], node.Content[i+1]
		key := join(prefix, k.Value)
		if first, dup := seen[k.Value]; dup {
			*ps = append(*ps, Problem{File: file, Line: k.Line, Field: key,
				Msg: fmt.Sprintf("written twice (first on line %d); keep one", first)})
			continue
		}
		seen[k.Value] = k.Line
		lines[key] = k.Line
		each(k, v, key)
	}
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

type field struct {
	Type  reflect.Type
	limit int
}

func fieldsOf(t reflect.Type) map[string]field {
	m := map[string]field{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		limit, _ := strconv.Atoi(f.Tag.Get("limit"))
		m[name] = field{f.Type, limit}
	}
	return m
}

func keysOf(t reflect.Type) []string {
	var ks []string
	for k := range fieldsOf(t) {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// closest suggests a valid key at edit distance ≤ 2 from a mistyped one.
func closest(s string, valid []string) string {
	best, bestD := "", 3
	for _, v := range valid {
		if d := editDistance(strings.ToLower(s), v); d < bestD {
			best, bestD = v, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
