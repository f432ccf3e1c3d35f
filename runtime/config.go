// Package runtime wires the engine together: the embedded or external NATS
// server, the Pebble store, the shard loops, the ingress readers, the
// checkpoint coordinator, the egress publisher and the admin API.
package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/twinflow/twinflow/runtime/console"
	"github.com/twinflow/twinflow/runtime/frontdoor"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/spec"
)

// Config configures an engine. The zero value plus a data dir is a complete
// platform on a laptop: embedded NATS, one shard per core, 1 GiB of memory.
type Config struct {
	// DataDir holds the Pebble store and the embedded NATS server's data.
	DataDir string
	// Module is the module spec: endpoints, ingresses, egresses.
	Module *spec.Module
	// NATSURL is an external NATS server (several URLs of one cluster
	// separated by commas); empty starts an embedded one.
	NATSURL string
	// Cluster is the name of the cluster this worker joins (cluster mode,
	// see docs/design.md); empty runs one process alone. It needs NATSURL.
	Cluster string
	// ClusterReplicas is the number of replicas of the cluster's streams,
	// bucket and object store, and of the ingress, egress and dead-letter
	// streams in cluster mode; default 3.
	ClusterReplicas int
	// ClusterMemberTTL is how long a worker's heartbeats may be missing
	// before the others take its key groups; default 4s.
	ClusterMemberTTL time.Duration
	// NATSCredsFile authenticates to an external NATS server: a NATS
	// credentials file (JWT and seed) or an nkey seed file. NATSToken is a
	// token instead. NATSCAFile verifies the server's certificate, and
	// NATSCertFile and NATSKeyFile are a client certificate (mutual TLS).
	NATSCredsFile, NATSToken, NATSCAFile, NATSCertFile, NATSKeyFile string
	// NATSHost is the address the embedded server listens on; default
	// 127.0.0.1. Beyond loopback it requires NATSTLSCertFile.
	NATSHost string
	// NATSPort is the embedded server's port; 0 means 4222, or a free port
	// when 4222 is taken; -1 means always a free port. Any other port must
	// be free.
	NATSPort int
	// NATSTLSCertFile and NATSTLSKeyFile make the embedded server accept
	// only TLS connections, with this certificate and key (PEM).
	NATSTLSCertFile, NATSTLSKeyFile string
	// NATSSyncInterval is how often the embedded server fsyncs JetStream
	// writes. Zero, the default, fsyncs every write, so an acknowledged
	// publish is on disk: NATS's own default (2 minutes) can lose
	// acknowledged messages on power loss. A positive interval trades that
	// for throughput.
	NATSSyncInterval time.Duration
	// AdminAddr is where the admin/query API, /metrics and /healthz listen;
	// default 127.0.0.1:8090, or a free port when 8090 is taken
	// ("127.0.0.1:0" always picks a free port). Any other address must be
	// free. Beyond loopback the API must be served over TLS, unless
	// AdminInsecure.
	AdminAddr string
	// AdminTLSCertFile and AdminTLSKeyFile serve the admin API over HTTPS
	// with this certificate and key (PEM).
	AdminTLSCertFile, AdminTLSKeyFile string
	// AdminClientCAFile, with TLS, lets a client certificate signed by one
	// of these CAs (PEM) authenticate a call, as the token does.
	AdminClientCAFile string
	// AdminInsecure serves a plain-HTTP admin API beyond loopback, where the
	// token crosses the network in clear.
	AdminInsecure bool
	// IngressAddr is where the HTTP/Connect front door listens (POST
	// /send/..., /call/..., twinflow.v1.IngressService); default
	// 127.0.0.1:8080, or a free port when 8080 is taken; "off" serves none.
	// Beyond loopback it must be served over TLS, unless IngressInsecure.
	IngressAddr string
	// IngressTLSCertFile and IngressTLSKeyFile serve the front door over
	// HTTPS with this certificate and key (PEM); IngressClientCAFile, with
	// TLS, lets a client certificate of these CAs authenticate a call, as
	// the token does.
	IngressTLSCertFile, IngressTLSKeyFile, IngressClientCAFile string
	// IngressInsecure serves a plain-HTTP front door beyond loopback, where
	// its token crosses the network in clear.
	IngressInsecure bool
	// FrontDoor bounds the front door's durable writes and its queue.
	FrontDoor frontdoor.Limits
	// MetricsAuth says whether /metrics needs the admin token.
	MetricsAuth MetricsAuth
	// MaxAdminRequestBytes bounds the body of an admin API request; default
	// 1 MiB.
	MaxAdminRequestBytes int64
	// SavepointDir is the only directory the admin API writes savepoints
	// under; default <data>/savepoints.
	SavepointDir string
	// Shards is the number of shard loops; default the number of cores.
	Shards int
	// KeyGroups is K, fixed when the data dir is created; default 128.
	KeyGroups int
	// CheckpointInterval is the time between checkpoints; default 1s.
	CheckpointInterval time.Duration
	// MaxPayload bounds a message's size; default 1 MiB.
	MaxPayload int
	// MaxAddressQueue bounds the messages of one address held in memory;
	// more spill to the store and come back in order. Default 1024.
	MaxAddressQueue int
	// MaxSpillBytes bounds the address backlogs spilled to the store; at
	// it, intake pauses. Default 16 GiB.
	MaxSpillBytes int64
	// RetryBase and RetryMax bound the backoff between retries of an
	// address whose function reported a retryable error; defaults 100ms and
	// 30s. How many attempts a batch gets is the endpoint's (module spec:
	// maxAttempts, maxAge); by default, unlimited.
	RetryBase time.Duration
	RetryMax  time.Duration
	// StopTimeout bounds each of the two phases of a clean stop: finishing
	// the queued work, and the final checkpoint with its egress. Work left
	// when the first ends stays in the final checkpoint. Default 30s.
	StopTimeout time.Duration
	// DedupWindow is how long a publisher may repeat a message with the
	// same Nats-Msg-Id and have the repeat dropped, across restarts of the
	// runtime and of NATS: the duplicate window of every stream, and how
	// long an address remembers the keys of the messages it received.
	// Default 10 minutes.
	DedupWindow time.Duration
	// Memory is the process's memory budget.
	Memory Memory
	// ConsolePages are applications' own pages, by name, that the web
	// console serves under /ui/apps/NAME/ from their file systems
	// (index.html first), behind its login. Names are letters, digits, '-'
	// and '_'.
	ConsolePages map[string]fs.FS
	// Logger receives structured logs; default slog.Default().
	Logger *slog.Logger
	// StateFS is the file system of the Pebble store in DataDir/state; nil
	// means the operating system's. Tests inject disk faults through it
	// (runtime/state/faultfs).
	StateFS vfs.FS
	// Now is the clock of state expiry, delayed messages and retry backoff;
	// default time.Now. Tests inject one to drive them; a clock that stands
	// still also holds back retries. Metrics use the wall clock.
	Now func() time.Time
}

// DefaultMaxSpillBytes is the default Config.MaxSpillBytes.
const DefaultMaxSpillBytes = 16 << 30

// MetricsAuth says whether /metrics needs the admin API's token.
type MetricsAuth int

const (
	// MetricsAuthAuto leaves /metrics open when the admin API listens on
	// loopback, and asks for the token otherwise.
	MetricsAuthAuto MetricsAuth = iota
	// MetricsAuthToken always asks for the token.
	MetricsAuthToken
	// MetricsAuthNone never asks for it.
	MetricsAuthNone
)

// ParseMetricsAuth parses "auto", "token" or "none".
func ParseMetricsAuth(s string) (MetricsAuth, error) {
	switch s {
	case "auto", "":
		return MetricsAuthAuto, nil
	case "token":
		return MetricsAuthToken, nil
	case "none":
		return MetricsAuthNone, nil
	}
	return 0, fmt.Errorf("metrics auth %q: want auto, token or none", s)
}

// Memory splits one total into parts, as Flink budgets a TaskManager. Each
// part is a hard bound: reaching it pauses intake rather than growing.
type Memory struct {
	// Total is the process's whole budget; default 1 GiB.
	Total int64
	// Fractions of Total; zero means the default in parentheses.
	BlockCache  float64 // Pebble block cache (0.25)
	MemTables   float64 // Pebble memtables (0.10)
	Queues      float64 // messages in inboxes and mailboxes (0.15)
	Uncommitted float64 // state written since the last checkpoint (0.15)
	Reserve     float64 // Go runtime, connections, everything else (0.35)
}

// Budget is Memory resolved to bytes.
type Budget struct {
	Total, BlockCache, MemTables, Queues, Uncommitted, Reserve int64
}

// GoMemoryLimit is the part of the budget for the Go heap: Pebble's cache
// and memtables live outside it. A process running one engine should set
// it as its GOMEMLIMIT (debug.SetMemoryLimit), as twinflow run does.
func (b Budget) GoMemoryLimit() int64 { return b.Total - b.BlockCache - b.MemTables }

// String lists the parts, for the start-up log.
func (b Budget) String() string {
	mib := func(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
	return fmt.Sprintf("total %s = block cache %s + memtables %s + queues %s + uncommitted state %s + runtime reserve %s",
		mib(b.Total), mib(b.BlockCache), mib(b.MemTables), mib(b.Queues), mib(b.Uncommitted), mib(b.Reserve))
}

// Minimum sizes under which a part cannot do its job.
const (
	minBlockCache  = 8 << 20
	minMemTables   = 4 << 20
	minQueues      = 8 << 20
	minUncommitted = 8 << 20
	minReserve     = 64 << 20
)

// Resolve computes the parts and checks that they fit.
func (m Memory) Resolve() (Budget, error) {
	def := func(v, d float64) float64 {
		if v == 0 {
			return d
		}
		return v
	}
	total := m.Total
	if total == 0 {
		total = 1 << 30
	}
	f := [5]float64{def(m.BlockCache, 0.25), def(m.MemTables, 0.10), def(m.Queues, 0.15), def(m.Uncommitted, 0.15), def(m.Reserve, 0.35)}
	names := [5]string{"block cache", "memtables", "queues", "uncommitted state", "runtime reserve"}
	mins := [5]int64{minBlockCache, minMemTables, minQueues, minUncommitted, minReserve}
	var sum float64
	var problems []string
	for i, v := range f {
		if v < 0 || v > 1 {
			problems = append(problems, fmt.Sprintf("%s fraction %.2f is not within [0,1]", names[i], v))
		}
		sum += v
	}
	if sum > 1.0001 {
		problems = append(problems, fmt.Sprintf("fractions add up to %.2f (%s %.2f + %s %.2f + %s %.2f + %s %.2f + %s %.2f), more than 1",
			sum, names[0], f[0], names[1], f[1], names[2], f[2], names[3], f[3], names[4], f[4]))
	}
	var parts [5]int64
	for i, v := range f {
		parts[i] = int64(float64(total) * v)
		if parts[i] < mins[i] {
			problems = append(problems, fmt.Sprintf("%s would get %d MiB of %d MiB total, below its minimum of %d MiB",
				names[i], parts[i]>>20, total>>20, mins[i]>>20))
		}
	}
	if len(problems) > 0 {
		return Budget{}, fmt.Errorf("memory budget does not fit: %s", strings.Join(problems, "; "))
	}
	return Budget{Total: total, BlockCache: parts[0], MemTables: parts[1], Queues: parts[2], Uncommitted: parts[3], Reserve: parts[4]}, nil
}

// withDefaults fills in the zero fields.
func (c Config) withDefaults() Config {
	if c.Module == nil {
		c.Module = &spec.Module{}
	}
	if c.NATSHost == "" {
		c.NATSHost = "127.0.0.1"
	}
	if c.MaxAdminRequestBytes == 0 {
		c.MaxAdminRequestBytes = 1 << 20
	}
	if c.SavepointDir == "" && c.DataDir != "" {
		c.SavepointDir = filepath.Join(c.DataDir, "savepoints")
	}
	if c.Shards == 0 {
		c.Shards = goruntime.NumCPU()
	}
	if c.KeyGroups == 0 {
		c.KeyGroups = keygroup.DefaultK
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = time.Second
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = 1 << 20
	}
	if c.MaxAddressQueue == 0 {
		c.MaxAddressQueue = shard.DefaultMaxAddressQueue
	}
	if c.MaxSpillBytes == 0 {
		c.MaxSpillBytes = DefaultMaxSpillBytes
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 30 * time.Second
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = 10 * time.Minute
	}
	if c.RetryBase == 0 {
		c.RetryBase = 100 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Cluster != "" && c.ClusterReplicas == 0 {
		c.ClusterReplicas = 3
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate checks the configuration and names every problem found.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if err := console.CheckApps(c.ConsolePages); err != nil {
		errs = append(errs, err)
	}
	if c.Shards < 1 || c.Shards > 1024 {
		errs = append(errs, fmt.Errorf("shards must be within [1,1024], got %d", c.Shards))
	}
	if err := keygroup.Validate(c.KeyGroups); err != nil {
		errs = append(errs, err)
	} else if c.Shards > c.KeyGroups {
		errs = append(errs, fmt.Errorf("shards (%d) must not exceed key groups (%d)", c.Shards, c.KeyGroups))
	}
	if c.CheckpointInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("checkpoint interval must be at least 10ms, got %s", c.CheckpointInterval))
	}
	if c.MaxPayload < 1 {
		errs = append(errs, fmt.Errorf("max payload must be positive, got %d", c.MaxPayload))
	}
	if c.StopTimeout < 0 {
		errs = append(errs, fmt.Errorf("stop timeout must not be negative, got %s", c.StopTimeout))
	}
	if c.DedupWindow < time.Second {
		errs = append(errs, fmt.Errorf("dedup window must be at least 1s, got %s", c.DedupWindow))
	}
	if c.MaxAddressQueue < 1 {
		errs = append(errs, fmt.Errorf("max address queue must be at least 1, got %d", c.MaxAddressQueue))
	}
	if c.MaxSpillBytes < 0 {
		errs = append(errs, fmt.Errorf("spill budget must not be negative, got %d", c.MaxSpillBytes))
	}
	if _, err := c.Memory.Resolve(); err != nil {
		errs = append(errs, err)
	}
	if c.NATSURL == "" && !isLoopback(c.NATSHost) && c.NATSTLSCertFile == "" {
		errs = append(errs, fmt.Errorf("the embedded NATS server would listen on %s, beyond this machine, without TLS: give it a certificate (twinflow run -nats-tls-cert and -nats-tls-key)", c.NATSHost))
	}
	if (c.NATSTLSCertFile == "") != (c.NATSTLSKeyFile == "") {
		errs = append(errs, errors.New("the embedded NATS server's TLS needs both a certificate and its key"))
	}
	if c.NATSURL != "" && (c.NATSTLSCertFile != "" || c.NATSHost != "127.0.0.1") {
		errs = append(errs, errors.New("the embedded NATS server's host and certificate do not apply to an external NATS server"))
	}
	if (c.AdminTLSCertFile == "") != (c.AdminTLSKeyFile == "") {
		errs = append(errs, errors.New("the admin API's TLS needs both a certificate and its key"))
	}
	if c.AdminClientCAFile != "" && c.AdminTLSCertFile == "" {
		errs = append(errs, errors.New("client certificates for the admin API need the API served over TLS (a certificate and its key)"))
	}
	if host := adminHost(c.AdminAddr); !isLoopback(host) && c.AdminTLSCertFile == "" && !c.AdminInsecure {
		errs = append(errs, fmt.Errorf("the admin API would listen on %s, beyond this machine, over plain HTTP: serve it over TLS (twinflow run -admin-tls-cert and -admin-tls-key), or pass -admin-insecure to accept that its token crosses the network in clear", c.AdminAddr))
	}
	if c.Cluster != "" && c.NATSURL == "" {
		errs = append(errs, fmt.Errorf("cluster %s needs the NATS cluster's URLs (twinflow run -nats nats://a:4222,nats://b:4222,nats://c:4222): "+
			"the workers of a cluster share its JetStream", c.Cluster))
	}
	if (c.IngressTLSCertFile == "") != (c.IngressTLSKeyFile == "") {
		errs = append(errs, errors.New("the front door's TLS needs both a certificate and its key"))
	}
	if c.IngressClientCAFile != "" && c.IngressTLSCertFile == "" {
		errs = append(errs, errors.New("client certificates for the front door need it served over TLS (a certificate and its key)"))
	}
	if c.IngressAddr != IngressOff {
		if host := hostOf(c.IngressAddr, defaultIngressAddr); !isLoopback(host) && c.IngressTLSCertFile == "" && !c.IngressInsecure {
			errs = append(errs, fmt.Errorf("the front door would listen on %s, beyond this machine, over plain HTTP: serve it over TLS (twinflow run -ingress-tls-cert and -ingress-tls-key), or pass -ingress-insecure to accept that its token crosses the network in clear", c.IngressAddr))
		}
	}
	errs = append(errs, validateMQTT(&c)...)
	if c.MaxAdminRequestBytes < 1024 {
		errs = append(errs, fmt.Errorf("max admin request size must be at least 1 KiB, got %d", c.MaxAdminRequestBytes))
	}
	return errors.Join(errs...)
}

// adminHost is the host of an admin listen address; the default address
// is on loopback.
func adminHost(addr string) string { return hostOf(addr, "127.0.0.1:8090") }

// hostOf is the host of a listen address, or of def when addr is empty.
func hostOf(addr, def string) string {
	if addr == "" {
		addr = def
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// isLoopback reports whether host is reachable only from this machine:
// "localhost" or a loopback IP address. An empty host is every interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
