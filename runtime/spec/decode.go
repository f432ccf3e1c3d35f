package spec

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/twinflow/twinflow/router"
)

// decoder walks the YAML node tree, collecting every problem with its line.
type decoder struct {
	file string
	errs []*Error
	// lines maps field paths ("ingresses[0].targets[1].id") to the line of
	// their value, to place the errors router.New reports by path.
	lines map[string]int
	// keyLines maps a field's value node to the line of its key, which is
	// where a problem with a block mapping or list value is reported.
	keyLines map[*yaml.Node]int
	// covered are the paths with a problem already reported; router errors
	// at, above or below them would repeat it.
	covered []string
}

func (d *decoder) errorf(line int, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Path: path, Detail: fmt.Sprintf(format, args...)})
	d.covered = append(d.covered, path)
}

// missing reports a required field that is absent from the mapping at.
func (d *decoder) missing(n *yaml.Node, at, field string) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Path: at, Detail: field + " is required"})
	d.covered = append(d.covered, join(at, field))
}

func (d *decoder) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(d.errs, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
	errs := make([]error, len(d.errs))
	for i, e := range d.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntax reports an error of the YAML parser.
func (d *decoder) syntax(err error) {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		d.errorf(line, "", "invalid YAML: %s", m[2])
		return
	}
	d.errorf(0, "", "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}

func (d *decoder) module(data []byte) *Module {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &Module{}
		}
		d.syntax(err)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			d.syntax(err)
		} else {
			d.errorf(extra.Line, "", "a module spec is a single YAML document; remove the second one")
		}
		return nil
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return &Module{}
	}
	f := d.fields(doc.Content[0], "", "endpoints", "ingresses", "egresses", "deadLetters")
	if f == nil {
		return nil
	}
	m := &Module{}
	d.endpoints(m, f["endpoints"])
	d.ingresses(m, f["ingresses"])
	d.egresses(m, f["egresses"])
	d.deadLetters(m, f["deadLetters"])
	d.crossCheck(m)
	return m
}

func (d *decoder) endpoints(m *Module, n *yaml.Node) {
	seen := map[string]int{}
	for i, item := range d.sequence(n, "endpoints") {
		at := fmt.Sprintf("endpoints[%d]", i)
		f := d.fields(item, at, "functions", "url", "timeout", "maxBatchAddresses", "maxBatchMessages", "maxInFlight",
			"maxAttempts", "maxAge")
		if f == nil {
			continue
		}
		ep := Endpoint{
			Timeout:           DefaultTimeout,
			MaxBatchAddresses: DefaultMaxBatchAddresses,
			MaxBatchMessages:  DefaultMaxBatchMessages,
			MaxInFlight:       DefaultMaxInFlight,
		}
		if v := f["functions"]; v == nil {
			d.missing(item, at, "functions")
		} else if s, ok := d.str(v, at+".functions"); ok {
			if err := validFunctions(s); err != nil {
				d.errorf(d.line(v), at+".functions", "%v", err)
			} else if j, dup := seen[s]; dup {
				d.errorf(d.line(v), at+".functions", "%s is already served by endpoints[%d]", s, j)
			} else {
				seen[s] = i
				ep.Functions = s
			}
		}
		if v := f["url"]; v == nil {
			d.missing(item, at, "url")
		} else if s, ok := d.str(v, at+".url"); ok {
			if err := validURL(s); err != nil {
				d.errorf(d.line(v), at+".url", "%v", err)
			}
			ep.URL = s
		}
		if v := f["timeout"]; v != nil {
			if t, ok := d.duration(v, at+".timeout"); ok {
				ep.Timeout = t
			}
		}
		if v := f["maxAge"]; v != nil {
			if t, ok := d.duration(v, at+".maxAge"); ok {
				ep.MaxAge = t
			}
		}
		for _, field := range []struct {
			name string
			dst  *int
		}{
			{"maxBatchAddresses", &ep.MaxBatchAddresses},
			{"maxBatchMessages", &ep.MaxBatchMessages},
			{"maxInFlight", &ep.MaxInFlight},
			{"maxAttempts", &ep.MaxAttempts},
		} {
			if v := f[field.name]; v != nil {
				if x, ok := d.integer(v, at+"."+field.name, 1); ok {
					*field.dst = x
				}
			}
		}
		m.Endpoints = append(m.Endpoints, ep)
	}
}

// validFunctions checks an endpoint's functions: "namespace/name" or
// "namespace/*".
func validFunctions(s string) error {
	if ns, ok := strings.CutSuffix(s, "/*"); ok {
		if !router.IsValidName(ns) {
			return fmt.Errorf("namespace %q must match [A-Za-z0-9_-]+", ns)
		}
		return nil
	}
	if err := router.ValidateFunctionType(s); err != nil {
		return fmt.Errorf(`%v (or "namespace/*" for a whole namespace)`, err)
	}
	return nil
}

func validURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("URL %q must start with http:// or https://", s)
	}
	if u.Host == "" {
		return fmt.Errorf("URL %q has no host", s)
	}
	return nil
}

func (d *decoder) ingresses(m *Module, n *yaml.Node) {
	for i, item := range d.sequence(n, "ingresses") {
		at := fmt.Sprintf("ingresses[%d]", i)
		// Every item yields a rule, so that the indexes in the errors of
		// router.New match the file.
		var r router.IngressRule
		f := d.fields(item, at, "name", "subject", "typename", "typenameHeader", "targets")
		if f != nil {
			r.Name = d.required(f, item, at, "name")
			r.Subject = d.required(f, item, at, "subject")
			r.Typename = d.optional(f, at, "typename")
			r.TypenameHeader = d.optional(f, at, "typenameHeader")
			if v := f["targets"]; v == nil {
				d.missing(item, at, "targets")
			} else {
				for j, t := range d.sequence(v, at+".targets") {
					r.Targets = append(r.Targets, d.target(t, fmt.Sprintf("%s.targets[%d]", at, j)))
				}
			}
		}
		m.Ingresses = append(m.Ingresses, r)
	}
}

func (d *decoder) target(n *yaml.Node, at string) router.TargetRule {
	t := router.TargetRule{ID: router.IDSource{SubjectToken: -1}}
	f := d.fields(n, at, "function", "id")
	if f == nil {
		return t
	}
	t.FunctionType = d.required(f, n, at, "function")
	v := f["id"]
	if v == nil {
		d.missing(n, at, "id")
		return t
	}
	at += ".id"
	id := d.fields(v, at, "subjectToken", "header", "jsonField")
	if id == nil {
		return t
	}
	if len(id) != 1 {
		d.errorf(d.line(v), at, "exactly one of subjectToken, header, jsonField is required")
		return t
	}
	if tok := id["subjectToken"]; tok != nil {
		if x, ok := d.integer(tok, at+".subjectToken", 0); ok {
			t.ID.SubjectToken = x
		}
	}
	t.ID.Header = d.optional(id, at, "header")
	t.ID.JSONField = d.optional(id, at, "jsonField")
	return t
}

func (d *decoder) egresses(m *Module, n *yaml.Node) {
	for i, item := range d.sequence(n, "egresses") {
		at := fmt.Sprintf("egresses[%d]", i)
		var r router.EgressRule
		f := d.fields(item, at, "name", "subject", "delivery")
		if f != nil {
			r.Name = d.required(f, item, at, "name")
			r.Subject = d.required(f, item, at, "subject")
			if v := f["delivery"]; v != nil {
				if s, ok := d.str(v, at+".delivery"); ok {
					delivery, err := router.ParseDelivery(s)
					if err != nil {
						d.errorf(d.line(v), at+".delivery", "%v", err)
					}
					r.Delivery = delivery
				}
			}
		}
		m.Egresses = append(m.Egresses, r)
	}
}

// crossCheck validates the rules with the router, and what involves
// several sections.
func (d *decoder) crossCheck(m *Module) {
	if _, err := router.New(m.Ingresses, router.Limits{}); err != nil {
		d.routerErrors(err)
	}
	if _, err := router.NewEgresses(m.Egresses); err != nil {
		d.routerErrors(err)
	}
	for i, in := range m.Ingresses {
		for j, t := range in.Targets {
			at := fmt.Sprintf("ingresses[%d].targets[%d].function", i, j)
			if router.ValidateFunctionType(t.FunctionType) != nil || d.isCovered(at) {
				continue
			}
			if _, ok := m.EndpointFor(t.FunctionType); !ok {
				d.errorf(d.lineOf(at), at, "no endpoint serves %s; add one with functions: %s or %s", t.FunctionType, t.FunctionType, strings.Split(t.FunctionType, "/")[0]+"/*")
			}
		}
	}
	for i, eg := range m.Egresses {
		at := fmt.Sprintf("egresses[%d].subject", i)
		if d.isCovered(at) {
			continue
		}
		for _, in := range m.Ingresses {
			if router.SubjectsOverlap(eg.Subject, in.Subject) || router.SubjectsOverlap(eg.Subject+".>", in.Subject) {
				d.errorf(d.lineOf(at), at, "%q (with its keyed subjects %s.<key>) overlaps the subject %q of ingress %q", eg.Subject, eg.Subject, in.Subject, in.Name)
			}
		}
	}
}

// routerErrors places the errors of router.New and router.NewEgresses.
func (d *decoder) routerErrors(err error) {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var ce *router.ConfigError
		if !errors.As(e, &ce) {
			d.errorf(0, "", "%v", e)
			continue
		}
		if d.isCovered(ce.Path) {
			continue
		}
		d.errorf(d.lineOf(ce.Path), ce.Path, "%s", ce.Detail)
	}
}

// isCovered reports whether a problem was reported at path, above it or
// below it.
func (d *decoder) isCovered(path string) bool {
	for _, c := range d.covered {
		if within(path, c) || within(c, path) {
			return true
		}
	}
	return false
}

// within reports whether path is p or a field or element below it.
func within(path, p string) bool {
	if p == "" {
		return path == ""
	}
	rest, ok := strings.CutPrefix(path, p)
	return ok && (rest == "" || rest[0] == '.' || rest[0] == '[')
}

// lineOf returns the line of path, or of its nearest ancestor in the file.
func (d *decoder) lineOf(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// line returns the line to report a problem with node n at: its key's line
// when n is a field value, else its own.
func (d *decoder) line(n *yaml.Node) int {
	if l, ok := d.keyLines[n]; ok {
		return l
	}
	return n.Line
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// fields checks that n is a mapping with only the named fields, and returns
// its non-null fields by name. Merge keys (<<) are honoured. It returns nil
// when n is not a mapping.
func (d *decoder) fields(n *yaml.Node, path string, names ...string) map[string]*yaml.Node {
	if r := resolve(n); r.Kind != yaml.MappingNode {
		d.errorf(d.line(n), path, "must be a mapping with the fields %s, not %s", strings.Join(names, ", "), kindOf(r))
		return nil
	}
	out := map[string]*yaml.Node{}
	d.collect(resolve(n), path, names, out, map[string]int{}, map[*yaml.Node]bool{})
	return out
}

// collect gathers the fields of mapping n into out, then those of the
// mappings it merges that are not set yet. merged holds the mappings
// already gathered, against merge cycles.
func (d *decoder) collect(n *yaml.Node, path string, names []string, out map[string]*yaml.Node, keyLines map[string]int, merged map[*yaml.Node]bool) {
	if merged[n] {
		return
	}
	isMerged := len(merged) > 0
	merged[n] = true
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k.Line, path, "field names must be strings, not %s", kindOf(k))
			continue
		}
		name := k.Value
		at := join(path, name)
		if !slices.Contains(names, name) {
			d.errorf(k.Line, at, "unknown field%s", suggest(name, names))
			continue
		}
		if first, dup := keyLines[name]; dup {
			if !isMerged {
				d.errorf(k.Line, at, "duplicate field; it is already set on line %d", first)
			}
			continue
		}
		keyLines[name] = k.Line
		d.lines[at] = k.Line
		d.keyLines[v] = k.Line
		if !isNull(v) {
			out[name] = v
		}
	}
	for _, m := range merges {
		m = resolve(m)
		items := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			items = m.Content
		}
		for _, item := range items {
			if item = resolve(item); item.Kind != yaml.MappingNode {
				d.errorf(item.Line, path, "<< must merge a mapping or a list of mappings, not %s", kindOf(item))
				continue
			}
			d.collect(item, path, names, out, keyLines, merged)
		}
	}
}

// suggest proposes the field a misspelt name probably meant.
func suggest(name string, names []string) string {
	norm := strings.NewReplacer("_", "", "-", "")
	for _, n := range names {
		if strings.EqualFold(n, norm.Replace(name)) {
			return fmt.Sprintf(" (did you mean %s?)", n)
		}
	}
	return "; the fields here are " + strings.Join(names, ", ")
}

func kindOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing"
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!int":
			return fmt.Sprintf("the integer %q", n.Value)
		case "!!float":
			return fmt.Sprintf("the number %q", n.Value)
		case "!!bool":
			return fmt.Sprintf("the boolean %q", n.Value)
		}
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "empty"
}

// sequence returns the items of the list n, or nil for null.
func (d *decoder) sequence(n *yaml.Node, path string) []*yaml.Node {
	if n == nil {
		return nil
	}
	r := resolve(n)
	if r.Kind != yaml.SequenceNode {
		d.errorf(d.line(n), path, "must be a list, not %s", kindOf(r))
		return nil
	}
	for i, item := range r.Content {
		d.lines[fmt.Sprintf("%s[%d]", path, i)] = item.Line
	}
	return r.Content
}

// str returns the scalar n as a string.
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	r := resolve(n)
	if r.Kind != yaml.ScalarNode {
		d.errorf(d.line(n), path, "must be a string, not %s", kindOf(r))
		return "", false
	}
	return r.Value, true
}

// required returns the string field name of the mapping n at path.
func (d *decoder) required(f map[string]*yaml.Node, n *yaml.Node, at, name string) string {
	v := f[name]
	if v == nil {
		d.missing(n, at, name)
		return ""
	}
	s, _ := d.str(v, join(at, name))
	return s
}

// optional returns the string field name, or "".
func (d *decoder) optional(f map[string]*yaml.Node, at, name string) string {
	v := f[name]
	if v == nil {
		return ""
	}
	s, _ := d.str(v, join(at, name))
	return s
}

// integer returns the integer n, which must be at least min.
func (d *decoder) integer(n *yaml.Node, path string, min int) (int, bool) {
	r := resolve(n)
	var x int
	if r.Kind != yaml.ScalarNode || r.ShortTag() != "!!int" || r.Decode(&x) != nil {
		d.errorf(d.line(n), path, "must be an integer, not %s", kindOf(r))
		return 0, false
	}
	if x < min {
		d.errorf(d.line(n), path, "must be %d or more, got %d", min, x)
		return 0, false
	}
	return x, true
}

// duration returns the positive duration n ("10s", "1m30s").
func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	r := resolve(n)
	if r.Kind != yaml.ScalarNode {
		d.errorf(d.line(n), path, "must be a duration like 10s, not %s", kindOf(r))
		return 0, false
	}
	t, err := time.ParseDuration(r.Value)
	if err != nil {
		d.errorf(d.line(n), path, "must be a duration like 10s or 1m30s, got %q", r.Value)
		return 0, false
	}
	if t <= 0 {
		d.errorf(d.line(n), path, "must be positive, got %s", r.Value)
		return 0, false
	}
	return t, true
}
