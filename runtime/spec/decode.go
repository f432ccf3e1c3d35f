package spec

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/twinflow/twinflow/router"
)

// The file's shape. The YAML library parses a spec into nodes, and decode
// fills these structs from them, reporting every field that is unknown,
// duplicate, missing (tagged `spec:"required"`) or of the wrong kind with
// its line and field path, which the library's own errors lack; the values
// are then validated and turned into a Module. A pointer field is nil when
// the field is absent, null or of the wrong kind.
type (
	rawModule struct {
		Endpoints   []rawEndpoint   `yaml:"endpoints"`
		Ingresses   []rawIngress    `yaml:"ingresses"`
		Egresses    []rawEgress     `yaml:"egresses"`
		Users       []rawUser       `yaml:"users"`
		DeadLetters *rawDeadLetters `yaml:"deadLetters"`
		MQTT        *rawMQTT        `yaml:"mqtt"`
		Descriptors []string        `yaml:"descriptors"`
	}
	rawDeadLetters struct {
		MaxAge   *duration `yaml:"maxAge"`
		MaxBytes *string   `yaml:"maxBytes"`
	}
	rawEndpoint struct {
		Functions         *string   `yaml:"functions" spec:"required"`
		URL               *string   `yaml:"url" spec:"required"`
		Timeout           *duration `yaml:"timeout"`
		MaxBatchAddresses *int      `yaml:"maxBatchAddresses"`
		MaxBatchMessages  *int      `yaml:"maxBatchMessages"`
		MaxInFlight       *int      `yaml:"maxInFlight"`
		MaxAttempts       *int      `yaml:"maxAttempts"`
		MaxAge            *duration `yaml:"maxAge"`
		TLS               *rawTLS   `yaml:"tls"`
	}
	rawTLS struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	}
	rawUser struct {
		Name      *string  `yaml:"name" spec:"required"`
		Ingresses []string `yaml:"ingresses"`
		Egresses  []string `yaml:"egresses"`
		Publish   []string `yaml:"publish"`
		Subscribe []string `yaml:"subscribe"`
	}
	rawIngress struct {
		Name           string      `yaml:"name" spec:"required"`
		Subject        *string     `yaml:"subject"`
		Topic          *string     `yaml:"topic"`
		Typename       string      `yaml:"typename"`
		TypenameHeader string      `yaml:"typenameHeader"`
		Targets        []rawTarget `yaml:"targets" spec:"required"`
	}
	rawTarget struct {
		Function string `yaml:"function" spec:"required"`
		ID       *rawID `yaml:"id" spec:"required"`
	}
	rawID struct {
		SubjectToken *int    `yaml:"subjectToken"`
		Header       *string `yaml:"header"`
		JSONField    *string `yaml:"jsonField"`
	}
	rawEgress struct {
		Name     string  `yaml:"name" spec:"required"`
		Subject  string  `yaml:"subject" spec:"required"`
		Delivery *string `yaml:"delivery"`
	}
)

// duration is a string field that holds a Go duration ("10s"); decode
// names the expected kind in its errors.
type duration string

// decoder collects every problem of one spec with its line.
type decoder struct {
	file string
	errs []*Error
	// lines maps field paths ("ingresses[0].targets[1].id") to the line of
	// their key, or of the item for list items, to place the errors
	// router.New reports by path.
	lines map[string]int
	// covered are the paths with a problem already reported; later checks
	// at, above or below them would repeat it.
	covered []string
	// misfits are the paths whose value is of the wrong kind.
	misfits map[string]bool
	// values counts the values decoded, against aliases that expand
	// without end.
	values int
}

// maxValues bounds the values of a spec; a real one has a few hundred.
const maxValues = 100_000

func (d *decoder) errorf(line int, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Path: path, Detail: fmt.Sprintf(format, args...)})
	d.covered = append(d.covered, path)
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

// syntax reports an error of the YAML parser. go.yaml.in/yaml/v3 gives the
// line of a syntax error only in its text, "yaml: line 3: detail".
func (d *decoder) syntax(err error) {
	msg := strings.TrimPrefix(strings.ReplaceAll(err.Error(), "\n", " "), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, detail, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, detail
			}
		}
	}
	d.errorf(line, "", "invalid YAML: %s", msg)
}

func (d *decoder) parse(data []byte) *Module {
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
	root := doc.Content[0]
	if isNull(resolve(root)) {
		return &Module{}
	}
	var raw rawModule
	d.decode(root, reflect.ValueOf(&raw).Elem(), "", root.Line)
	if d.values > maxValues {
		return nil
	}
	m := &Module{}
	d.endpoints(m, raw.Endpoints)
	d.ingresses(m, raw.Ingresses)
	d.egresses(m, raw.Egresses)
	d.users(m, raw.Users)
	d.deadLetters(m, raw.DeadLetters)
	d.mqtt(m, raw.MQTT)
	d.descriptors(m, raw.Descriptors)
	d.crossCheck(m)
	d.checkUsers(m)
	d.checkDevices(m)
	return m
}

// descriptors checks the paths of the descriptor sets; the runtime reads
// the files.
func (d *decoder) descriptors(m *Module, paths []string) {
	seen := map[string]int{}
	for i, p := range paths {
		at := fmt.Sprintf("descriptors[%d]", i)
		if d.misfits[at] {
			continue
		}
		if j, dup := seen[p]; dup {
			d.errorf(d.lineOf(at), at, "%s is already listed as descriptors[%d]", p, j)
			continue
		}
		if p == "" {
			d.errorf(d.lineOf(at), at, "must be the path of a descriptor set file (buf build -o FILE.binpb), not empty")
			continue
		}
		seen[p] = i
		m.Descriptors = append(m.Descriptors, p)
	}
}

// positiveDuration parses a duration that must be positive ("10s",
// "1m30s"); it reports a bad one and returns 0.
func (d *decoder) positiveDuration(s duration, at string) time.Duration {
	t, err := time.ParseDuration(string(s))
	switch {
	case err != nil:
		d.errorf(d.lineOf(at), at, "must be a duration like 10s or 1m30s, got %q", s)
		return 0
	case t <= 0:
		d.errorf(d.lineOf(at), at, "must be positive, got %s", s)
		return 0
	}
	return t
}

func (d *decoder) endpoints(m *Module, raw []rawEndpoint) {
	seen := map[string]int{}
	for i, r := range raw {
		at := fmt.Sprintf("endpoints[%d]", i)
		if d.misfits[at] {
			continue
		}
		ep := Endpoint{
			Timeout:           DefaultTimeout,
			MaxBatchAddresses: DefaultMaxBatchAddresses,
			MaxBatchMessages:  DefaultMaxBatchMessages,
			MaxInFlight:       DefaultMaxInFlight,
		}
		if s := deref(r.Functions); r.Functions != nil {
			if err := validFunctions(s); err != nil {
				d.errorf(d.lineOf(at+".functions"), at+".functions", "%v", err)
			} else if j, dup := seen[s]; dup {
				d.errorf(d.lineOf(at+".functions"), at+".functions", "%s is already served by endpoints[%d]", s, j)
			} else {
				seen[s] = i
				ep.Functions = s
			}
		}
		if r.URL != nil {
			if err := validURL(*r.URL); err != nil {
				d.errorf(d.lineOf(at+".url"), at+".url", "%v", err)
			}
			ep.URL = *r.URL
		}
		if r.Timeout != nil {
			if t := d.positiveDuration(*r.Timeout, at+".timeout"); t > 0 {
				ep.Timeout = t
			}
		}
		d.atLeast(r.MaxBatchAddresses, at+".maxBatchAddresses", 1, &ep.MaxBatchAddresses)
		d.atLeast(r.MaxBatchMessages, at+".maxBatchMessages", 1, &ep.MaxBatchMessages)
		d.atLeast(r.MaxInFlight, at+".maxInFlight", 1, &ep.MaxInFlight)
		d.atLeast(r.MaxAttempts, at+".maxAttempts", 1, &ep.MaxAttempts)
		if r.MaxAge != nil {
			ep.MaxAge = d.positiveDuration(*r.MaxAge, at+".maxAge")
		}
		if r.TLS != nil && !d.misfits[at+".tls"] {
			ep.TLS = d.tls(*r.TLS, at+".tls", ep.URL)
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

func (d *decoder) ingresses(m *Module, raw []rawIngress) {
	for i, r := range raw {
		at := fmt.Sprintf("ingresses[%d]", i)
		// Every item yields a rule, so that the indexes in the errors of
		// router.New match the file.
		rule := router.IngressRule{Name: r.Name, Subject: deref(r.Subject), Typename: r.Typename, TypenameHeader: r.TypenameHeader}
		switch {
		case r.Subject != nil && r.Topic != nil:
			d.errorf(d.lineOf(at+".topic"), at+".topic", "set subject (NATS) or topic (MQTT), not both")
		case r.Topic != nil:
			d.topicIngress(&rule, *r.Topic, at)
		case r.Subject == nil && !d.misfits[at] && !d.misfits[at+".subject"]:
			d.errs = append(d.errs, &Error{File: d.file, Line: d.lineOf(at), Path: at, Detail: "subject is required (or topic, for MQTT)"})
			d.covered = append(d.covered, at+".subject")
		}
		for j, t := range r.Targets {
			rule.Targets = append(rule.Targets, d.target(t, fmt.Sprintf("%s.targets[%d]", at, j)))
		}
		m.Ingresses = append(m.Ingresses, rule)
	}
}

func (d *decoder) target(r rawTarget, at string) router.TargetRule {
	t := router.TargetRule{FunctionType: r.Function, ID: router.IDSource{SubjectToken: -1}}
	if r.ID == nil {
		return t
	}
	at += ".id"
	// A value of the wrong kind, reported already, is there all the same.
	set := 0
	for name, isSet := range map[string]bool{
		"subjectToken": r.ID.SubjectToken != nil,
		"header":       r.ID.Header != nil,
		"jsonField":    r.ID.JSONField != nil,
	} {
		if isSet || d.misfits[at+"."+name] {
			set++
		}
	}
	if set != 1 {
		d.errorf(d.lineOf(at), at, "exactly one of subjectToken, header, jsonField is required")
		return t
	}
	d.atLeast(r.ID.SubjectToken, at+".subjectToken", 0, &t.ID.SubjectToken)
	t.ID.Header = deref(r.ID.Header)
	t.ID.JSONField = deref(r.ID.JSONField)
	return t
}

func (d *decoder) egresses(m *Module, raw []rawEgress) {
	for i, r := range raw {
		at := fmt.Sprintf("egresses[%d]", i)
		rule := router.EgressRule{Name: r.Name, Subject: r.Subject}
		if r.Delivery != nil {
			delivery, err := router.ParseDelivery(*r.Delivery)
			if err != nil {
				d.errorf(d.lineOf(at+".delivery"), at+".delivery", "%v", err)
			}
			rule.Delivery = delivery
		}
		m.Egresses = append(m.Egresses, rule)
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

func deref[T any](v *T) T {
	if v == nil {
		var zero T
		return zero
	}
	return *v
}

// missing reports a required field that is absent from the mapping at.
func (d *decoder) missing(at, field string) {
	d.errs = append(d.errs, &Error{File: d.file, Line: d.lineOf(at), Path: at, Detail: field + " is required"})
	d.covered = append(d.covered, join(at, field))
}

// atLeast sets *dst to the integer field at path when it is min or more.
func (d *decoder) atLeast(v *int, path string, min int, dst *int) {
	switch {
	case v == nil:
	case *v < min:
		d.errorf(d.lineOf(path), path, "must be %d or more, got %d", min, *v)
	default:
		*dst = *v
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

// misfit reports a value of the wrong kind at path.
func (d *decoder) misfit(line int, path, format string, args ...any) {
	d.errorf(line, path, format, args...)
	d.misfits[path] = true
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

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// decode decodes the node n into v, a value of the spec's shape, and
// reports what does not fit with its field path. It leaves a value of the
// wrong kind as it is, and reports false. line is where a problem with n
// itself is reported: its key's line for a field value, its own for a list
// item. The library decodes the scalars.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, line int) bool {
	n = resolve(n)
	if d.values++; d.values > maxValues {
		if d.values == maxValues+1 {
			d.errorf(line, path, "the spec holds more than %d values once its aliases are expanded", maxValues)
		}
		return false
	}
	if v.Kind() == reflect.Pointer {
		p := reflect.New(v.Type().Elem())
		if !d.decode(n, p.Elem(), path, line) {
			return false
		}
		v.Set(p)
		return true
	}
	fits := true
	switch t := v.Type(); {
	case t.Kind() == reflect.Struct:
		names, index := fieldsOf(t)
		if fits = n.Kind == yaml.MappingNode; !fits {
			d.misfit(line, path, "must be a mapping with the fields %s, not %s", strings.Join(names, ", "), kindOf(n))
			break
		}
		set := map[string]bool{} // a null field is an absent one
		d.collect(n, path, names, map[string]int{}, map[*yaml.Node]bool{}, func(name string, value *yaml.Node, keyLine int) {
			if !isNull(resolve(value)) {
				set[name] = true
				d.decode(value, v.Field(index[name]), join(path, name), keyLine)
			}
		})
		for i, name := range names {
			if !set[name] && t.Field(i).Tag.Get("spec") == "required" {
				d.missing(path, name)
			}
		}
	case t.Kind() == reflect.Slice:
		if fits = n.Kind == yaml.SequenceNode; !fits {
			d.misfit(line, path, "must be a list, not %s", kindOf(n))
			break
		}
		v.Set(reflect.MakeSlice(t, len(n.Content), len(n.Content)))
		for i, item := range n.Content {
			at := fmt.Sprintf("%s[%d]", path, i)
			d.lines[at] = item.Line
			d.decode(item, v.Index(i), at, item.Line)
		}
	case t.Kind() == reflect.Int:
		if fits = n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" && n.Decode(v.Addr().Interface()) == nil; !fits {
			d.misfit(line, path, "must be an integer, not %s", kindOf(n))
		}
	case t == reflect.TypeFor[duration]():
		if fits = n.Kind == yaml.ScalarNode && n.Decode(v.Addr().Interface()) == nil; !fits {
			d.misfit(line, path, "must be a duration like 10s, not %s", kindOf(n))
		}
	case t.Kind() == reflect.String:
		if fits = n.Kind == yaml.ScalarNode && n.Decode(v.Addr().Interface()) == nil; !fits {
			d.misfit(line, path, "must be a string, not %s", kindOf(n))
		}
	default:
		panic(fmt.Sprintf("spec: cannot decode into %v", t))
	}
	return fits
}

// collect calls field for each known, non-null field of the mapping n,
// then for those of the mapping or mappings it merges (<<) that are not set
// yet. It reports unknown and duplicate fields and bad merges. keyLines
// holds the fields seen so far, merged the mappings already gathered,
// against merge cycles.
func (d *decoder) collect(n *yaml.Node, path string, names []string, keyLines map[string]int, merged map[*yaml.Node]bool, field func(name string, v *yaml.Node, keyLine int)) {
	if merged[n] {
		return
	}
	merged[n] = true
	own := map[string]int{} // the lines of n's keys, against duplicates
	var merge *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		at := join(path, k.Value)
		isMerge := k.Tag == "!!merge"
		switch first, dup := own[k.Value]; {
		case k.Kind != yaml.ScalarNode:
			// Not a problem with the mapping's fields: they are still
			// checked.
			d.errs = append(d.errs, &Error{File: d.file, Line: k.Line, Path: path, Detail: "field names must be strings, not " + kindOf(k)})
		case !isMerge && !slices.Contains(names, k.Value):
			d.errorf(k.Line, at, "unknown field%s", suggest(k.Value, names))
		case dup:
			d.errorf(k.Line, at, "duplicate field; it is already set on line %d", first)
		case isMerge:
			own[k.Value] = k.Line
			merge = v
		default:
			own[k.Value] = k.Line
			if _, set := keyLines[k.Value]; !set { // else a mapping merging this one sets it
				keyLines[k.Value] = k.Line
				d.lines[at] = k.Line
				field(k.Value, v, k.Line)
			}
		}
	}
	if merge == nil {
		return
	}
	m := resolve(merge)
	items := []*yaml.Node{m}
	if m.Kind == yaml.SequenceNode {
		items = m.Content
	}
	for _, item := range items {
		if r := resolve(item); r.Kind != yaml.MappingNode {
			d.errorf(r.Line, join(path, "<<"), "must merge a mapping or a list of mappings, not %s", kindOf(r))
			continue
		}
		d.collect(resolve(item), path, names, keyLines, merged, field)
	}
}

// fieldsOf returns the YAML names of the fields of struct type t, in order,
// and their indexes.
func fieldsOf(t reflect.Type) ([]string, map[string]int) {
	names := make([]string, t.NumField())
	index := map[string]int{}
	for i := range names {
		names[i] = t.Field(i).Tag.Get("yaml")
		index[names[i]] = i
	}
	return names, index
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
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
