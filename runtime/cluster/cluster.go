package cluster

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/runtime/keygroup"
)

// Config names a cluster and shapes its NATS resources.
type Config struct {
	// Name identifies the cluster: every worker started with the same name
	// on the same NATS cluster is part of it. Letters, digits, '-' and '_',
	// at most 32 of them. Required.
	Name string
	// KeyGroups is the number of key groups K, a power of two (see
	// keygroup.Validate). The first worker of a cluster records it in NATS;
	// joining with another K fails. Zero means the recorded K, or
	// keygroup.DefaultK for a new cluster.
	KeyGroups int
	// Replicas is the number of servers that store each of the cluster's
	// streams and buckets. Default 3: one server can fail, or be restarted,
	// without losing anything or stopping the cluster.
	Replicas int
	// MemberTTL is how long the others wait for a worker's heartbeat before
	// they judge it dead: most of the time it takes to notice that a worker
	// died. Heartbeats are sent every MemberTTL/4. Default 4s, at least 1s.
	MemberTTL time.Duration
}

// Defaults for [Config].
const (
	DefaultReplicas  = 3
	DefaultMemberTTL = 4 * time.Second
)

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	// keyTokenRE matches worker ids and incarnations: one token of a key.
	keyTokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// Validate checks c and fills in the defaults.
func (c *Config) Validate() error {
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("cluster: name %q: use 1 to 32 letters, digits, '-' or '_'", c.Name)
	}
	if c.KeyGroups != 0 {
		if err := keygroup.Validate(c.KeyGroups); err != nil {
			return fmt.Errorf("cluster %s: %w", c.Name, err)
		}
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("cluster %s: %d replicas: JetStream keeps 1 to 5", c.Name, c.Replicas)
	}
	if c.MemberTTL == 0 {
		c.MemberTTL = DefaultMemberTTL
	}
	if c.MemberTTL < time.Second {
		return fmt.Errorf("cluster %s: member TTL %s is below 1s: heartbeats every quarter of it would be judged by delays of the network and of NATS", c.Name, c.MemberTTL)
	}
	return nil
}

// Cluster is a worker's handle on the NATS resources of one cluster:
//
//   - the bucket TWINFLOW_<name> (KV): the number of key groups, a key per
//     member worker (member.<worker>, rewritten by its heartbeats), a lease per
//     key group (lease.<kg>), and a pointer to each key group's latest
//     snapshot (snapshot.<kg>);
//   - the stream TWINFLOW_<name>_CHANGELOG: the changelog of each key
//     group on subject twinflow.cluster.<name>.changelog.<kg>;
//   - the stream TWINFLOW_<name>_IN: the ingress messages routed by key
//     group, on subject twinflow.cluster.<name>.in.<kg> (see [Cluster.InStream]);
//   - the object store TWINFLOW_<name>_SNAPSHOTS: compacted snapshots of
//     key groups.
//
// Its methods are safe for concurrent use.
type Cluster struct {
	cfg  Config
	k    int
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	log  jetstream.Stream
	in   jetstream.Stream // the partitioned ingress; nil when attached
	snap jetstream.ObjectStore
}

// Open creates the cluster's resources, or checks and reuses them, and
// records the number of key groups or checks it against the recorded one.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if v := js.Conn().ConnectedServerVersion(); !atLeast(v, 2, 12) {
		return nil, fmt.Errorf("cluster %s: nats-server %s: cluster mode needs 2.12 or later on every server (atomic batch publish)", cfg.Name, v)
	}
	c := &Cluster{cfg: cfg, js: js}
	var err error
	c.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      c.bucketName(),
		Description: "Twinflow cluster " + cfg.Name + ": key groups, members, leases, snapshot pointers",
		History:     1,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: bucket %s: %w", cfg.Name, c.bucketName(), placementHint(err, cfg.Replicas))
	}
	if err := leaderReads(ctx, js, "KV_"+c.bucketName()); err != nil {
		return nil, fmt.Errorf("cluster %s: bucket %s: %w", cfg.Name, c.bucketName(), err)
	}
	if c.kv, err = js.KeyValue(ctx, c.bucketName()); err != nil {
		return nil, fmt.Errorf("cluster %s: bucket %s: %w", cfg.Name, c.bucketName(), err)
	}
	c.log, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        c.changelogStream(),
		Description: "Twinflow cluster " + cfg.Name + ": changelog of every key group",
		Subjects:    []string{c.changelogSubject(-1), c.MessageSubject(-1)},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		// A checkpoint of many key groups is one atomic batch.
		AllowAtomicPublish: true,
		// No direct gets: a follower could answer them with an older last
		// record, and deciding whether a write was fenced needs the
		// leader's answer.
		AllowDirect: false,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: stream %s: %w", cfg.Name, c.changelogStream(), placementHint(err, cfg.Replicas))
	}
	if err := c.openIn(ctx); err != nil {
		return nil, err
	}
	c.snap, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      c.snapshotBucket(),
		Description: "Twinflow cluster " + cfg.Name + ": snapshots of key groups",
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: object store %s: %w", cfg.Name, c.snapshotBucket(), placementHint(err, cfg.Replicas))
	}
	if err := leaderReads(ctx, js, "OBJ_"+c.snapshotBucket()); err != nil {
		return nil, fmt.Errorf("cluster %s: object store %s: %w", cfg.Name, c.snapshotBucket(), err)
	}
	if c.snap, err = js.ObjectStore(ctx, c.snapshotBucket()); err != nil {
		return nil, fmt.Errorf("cluster %s: object store %s: %w", cfg.Name, c.snapshotBucket(), err)
	}
	if c.k, err = c.recordKeyGroups(ctx, cfg.KeyGroups); err != nil {
		return nil, err
	}
	return c, nil
}

// ErrNoCluster means that no cluster of the name exists on the NATS
// cluster.
var ErrNoCluster = errors.New("no such cluster")

// Attach opens an existing cluster's resources without creating or
// changing anything: for reading its status.
func Attach(ctx context.Context, js jetstream.JetStream, name string) (*Cluster, error) {
	cfg := Config{Name: name}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, js: js}
	var err error
	if c.kv, err = js.KeyValue(ctx, c.bucketName()); err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("cluster %s: %w on this NATS cluster (bucket %s is missing): check the name, "+
				"or start a worker with twinflow run -cluster %s", name, ErrNoCluster, c.bucketName(), name)
		}
		return nil, fmt.Errorf("cluster %s: bucket %s: %w", name, c.bucketName(), err)
	}
	if c.log, err = js.Stream(ctx, c.changelogStream()); err != nil {
		return nil, fmt.Errorf("cluster %s: stream %s: %w", name, c.changelogStream(), err)
	}
	if c.snap, err = js.ObjectStore(ctx, c.snapshotBucket()); err != nil {
		return nil, fmt.Errorf("cluster %s: object store %s: %w", name, c.snapshotBucket(), err)
	}
	e, err := c.kv.Get(ctx, keyKeyGroups)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: read the number of key groups: %w", name, err)
	}
	if c.k, err = strconv.Atoi(string(e.Value())); err != nil || keygroup.Validate(c.k) != nil {
		return nil, fmt.Errorf("cluster %s: the recorded number of key groups %q is corrupt", name, e.Value())
	}
	return c, nil
}

// placementHint adds what to do to JetStream's refusals to place replicas.
func placementHint(err error, replicas int) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	switch apiErr.ErrorCode {
	case 10005: // no suitable peers for placement
		return fmt.Errorf("%w: fewer than %d NATS servers with JetStream are up and in the cluster: "+
			"start them (or wait for a restarting one), or set the replicas to the number of servers", err, replicas)
	case 10074: // replicas > 1 not supported in non-clustered mode
		return fmt.Errorf("%w: the NATS server is not part of a cluster: run %d clustered servers, "+
			"or set the replicas to 1 (then nothing survives the loss of that server)", err, replicas)
	}
	return err
}

// atLeast reports whether the version "major.minor.patch[-...]" is at least
// major.minor.
func atLeast(version string, major, minor int) bool {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	return err1 == nil && err2 == nil && (ma > major || ma == major && mi >= minor)
}

// recordKeyGroups records k in the bucket, or checks it against the
// recorded value; it returns the cluster's K.
func (c *Cluster) recordKeyGroups(ctx context.Context, k int) (int, error) {
	want := k
	if want == 0 {
		want = keygroup.DefaultK
	}
	_, err := c.kv.Create(ctx, keyKeyGroups, []byte(strconv.Itoa(want)))
	if err == nil {
		return want, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("cluster %s: record the number of key groups: %w", c.cfg.Name, err)
	}
	e, err := c.kv.Get(ctx, keyKeyGroups)
	if err != nil {
		return 0, fmt.Errorf("cluster %s: read the number of key groups: %w", c.cfg.Name, err)
	}
	stored, err := strconv.Atoi(string(e.Value()))
	if err != nil || keygroup.Validate(stored) != nil {
		return 0, fmt.Errorf("cluster %s: the recorded number of key groups %q is corrupt", c.cfg.Name, e.Value())
	}
	if k != 0 && stored != k {
		return 0, fmt.Errorf("cluster %s has %d key groups but %d were requested; "+
			"the number of key groups cannot change: configure %d, or use another cluster name", c.cfg.Name, stored, k, stored)
	}
	return stored, nil
}

// Name returns the cluster's name.
func (c *Cluster) Name() string { return c.cfg.Name }

// KeyGroups returns the cluster's number of key groups K.
func (c *Cluster) KeyGroups() int { return c.k }

// Keys of the cluster bucket.
const (
	keyKeyGroups   = "keygroups"
	memberPrefix   = "member."
	leasePrefix    = "lease."
	snapshotPrefix = "snapshot."
)

func (c *Cluster) bucketName() string      { return "TWINFLOW_" + c.cfg.Name }
func (c *Cluster) changelogStream() string { return "TWINFLOW_" + c.cfg.Name + "_CHANGELOG" }
func (c *Cluster) snapshotBucket() string  { return "TWINFLOW_" + c.cfg.Name + "_SNAPSHOTS" }

// changelogSubject returns the subject of key group kg's changelog, or the
// wildcard of all key groups when kg < 0.
func (c *Cluster) changelogSubject(kg int) string {
	p := "twinflow.cluster." + c.cfg.Name + ".changelog."
	if kg < 0 {
		return p + "*"
	}
	return p + strconv.Itoa(kg)
}

// MessageSubject returns the subject of the messages to key group kg from
// other key groups, or the wildcard of all key groups when kg < 0. They are
// in the changelog stream (an atomic batch is of one stream).
func (c *Cluster) MessageSubject(kg int) string {
	p := "twinflow.cluster." + c.cfg.Name + ".to."
	if kg < 0 {
		return p + "*"
	}
	return p + strconv.Itoa(kg)
}

// MessageStream is the stream that holds the messages between key groups.
func (c *Cluster) MessageStream() string { return c.changelogStream() }

func (c *Cluster) checkKeyGroup(kg int) error {
	if kg < 0 || kg >= c.k {
		return fmt.Errorf("cluster %s: key group %d is not in [0, %d)", c.cfg.Name, kg, c.k)
	}
	return nil
}

// leaderReads makes the reads of a bucket's stream go to its leader;
// handles bound after it read so. NATS creates key-value and object
// buckets with direct gets, which any replica answers, possibly before it
// has applied a write already acknowledged: a worker that joined again read
// its own deleted member key as present, then as missing. Leases, members,
// drains and snapshot pointers are read right after they are written, and
// an object's info read behind its chunks does not match them.
func leaderReads(ctx context.Context, js jetstream.JetStream, stream string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	if cfg := s.CachedInfo().Config; cfg.AllowDirect {
		cfg.AllowDirect = false
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return err
		}
	}
	return nil
}
