package spec

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twinflow/twinflow/router"
)

// Defaults of the endpoint settings.
const (
	// DefaultTimeout bounds one call to an endpoint.
	DefaultTimeout = 30 * time.Second
	// DefaultMaxBatchAddresses is how many addresses one call carries at most.
	DefaultMaxBatchAddresses = 256
	// DefaultMaxBatchMessages is how many messages for one address one call
	// carries at most.
	DefaultMaxBatchMessages = 128
	// DefaultMaxInFlight is how many calls to one endpoint run at once at most.
	DefaultMaxInFlight = 8
)

// Defaults of the dead-letter stream's limits.
const (
	// DefaultDeadLetterMaxAge is how long dead letters are kept: 30 days.
	DefaultDeadLetterMaxAge = 30 * 24 * time.Hour
	// DefaultDeadLetterMaxBytes bounds the dead letters kept: 1 GiB.
	DefaultDeadLetterMaxBytes = 1 << 30
	// MinDeadLetterMaxBytes is the smallest bound accepted: it holds a dead
	// letter of the largest default payload.
	MinDeadLetterMaxBytes = 2 << 20
)

// DeadLetters bounds the dead-letter stream (TWINFLOW_DLQ, subjects
// twinflow.dlq.>). When a bound is reached the oldest dead letters are
// removed. A zero field means its default.
type DeadLetters struct {
	// MaxAge removes dead letters older than this; default 30 days.
	MaxAge time.Duration
	// MaxBytes bounds the size of the stream; default 1 GiB.
	MaxBytes int64
}

// WithDefaults returns d with its zero fields set to the defaults.
func (d DeadLetters) WithDefaults() DeadLetters {
	if d.MaxAge == 0 {
		d.MaxAge = DefaultDeadLetterMaxAge
	}
	if d.MaxBytes == 0 {
		d.MaxBytes = DefaultDeadLetterMaxBytes
	}
	return d
}

// Endpoint is where the functions of some types are served. A parsed
// Endpoint has every default filled in.
type Endpoint struct {
	// Functions is the function type served, "namespace/name", or a whole
	// namespace, "namespace/*".
	Functions string
	// URL is the http:// or https:// base URL of the function endpoint.
	URL string
	// Timeout bounds one call.
	Timeout time.Duration
	// MaxBatchAddresses is how many addresses one call carries at most.
	MaxBatchAddresses int
	// MaxBatchMessages is how many messages for one address one call
	// carries at most.
	MaxBatchMessages int
	// MaxInFlight is how many calls to the endpoint run at once at most.
	MaxInFlight int
	// MaxAttempts dead-letters a batch of messages after it failed this
	// many times; 0, the default, retries until it succeeds or fails
	// terminally.
	MaxAttempts int
	// MaxAge dead-letters a batch that has kept failing for this long; 0,
	// the default, sets no limit.
	MaxAge time.Duration
	// TLS configures an https:// endpoint's certificate authorities and
	// client certificate; nil uses the system's roots and no certificate.
	TLS *TLS
}

// Module is a parsed, valid module spec. Ingresses and Egresses are ready for
// [router.New] and [router.NewEgresses].
type Module struct {
	// Endpoints serve the function types.
	Endpoints []Endpoint
	// Ingresses route NATS subjects to function addresses.
	Ingresses []router.IngressRule
	// Egresses are the named outputs functions publish to.
	Egresses []router.EgressRule
	// Users are NATS identities with narrower rights than the client's.
	Users []User
	// DeadLetters bounds the dead-letter stream.
	DeadLetters DeadLetters
	// MQTT configures the embedded NATS server's MQTT gateway; nil when
	// the spec has no mqtt section (twinflow run -mqtt-port turns the
	// gateway on all the same).
	MQTT *MQTT
	// Descriptors are the paths of the FileDescriptorSet files describing
	// the protobuf messages of the module's functions, relative to the
	// spec's directory once loaded by [Load].
	Descriptors []string
}

// EndpointFor returns the endpoint serving functionType ("namespace/name"):
// the one naming it exactly, else the one naming "namespace/*".
func (m *Module) EndpointFor(functionType string) (Endpoint, bool) {
	ns, _, ok := strings.Cut(functionType, "/")
	if !ok {
		return Endpoint{}, false
	}
	var wild *Endpoint
	for i := range m.Endpoints {
		ep := &m.Endpoints[i]
		switch ep.Functions {
		case functionType:
			return *ep, true
		case ns + "/*":
			wild = ep
		}
	}
	if wild != nil {
		return *wild, true
	}
	return Endpoint{}, false
}

// Load reads and parses the module spec at path; errors name the path.
func Load(path string) (*Module, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("module spec: %w", err)
	}
	m, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("module spec: %w", err)
	}
	m.resolvePaths(dir)
	return m, nil
}

// Parse parses and validates a module spec. filename is only used in error
// messages. It reports every problem it finds, each an [*Error], joined
// with [errors.Join] in line order.
func Parse(filename string, data []byte) (*Module, error) {
	d := &decoder{file: filename, lines: map[string]int{}, misfits: map[string]bool{}}
	m := d.parse(data)
	if err := d.err(); err != nil {
		return nil, err
	}
	return m, nil
}

// Error is one problem in a module spec.
type Error struct {
	// File is the file name given to [Parse] or [Load].
	File string
	// Line is the 1-based line of the problem, or 0 when unknown.
	Line int
	// Path is the field at fault, e.g. "ingresses[0].targets[1].id", or ""
	// for a problem with the file as a whole.
	Path string
	// Detail says what is wrong.
	Detail string
}

// Error returns "file:line: path: detail".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Detail)
	return b.String()
}
