package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/proto/gen/twinflow/v1/twinflowv1connect"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/backoff"
	"github.com/twinflow/twinflow/runtime/checkpoint"
	"github.com/twinflow/twinflow/runtime/datadir"
	"github.com/twinflow/twinflow/runtime/descriptors"
	"github.com/twinflow/twinflow/runtime/egress"
	"github.com/twinflow/twinflow/runtime/frontdoor"
	"github.com/twinflow/twinflow/runtime/ingress"
	"github.com/twinflow/twinflow/runtime/invoke"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/natsbus/natserr"
	"github.com/twinflow/twinflow/runtime/routing"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/state"
	"github.com/twinflow/twinflow/runtime/typedjson"
)

// Stream names.
const (
	DirectStream     = router.DirectStream
	DeadLetterStream = "TWINFLOW_DLQ"
	ingressStreamPfx = "TWINFLOW_INGRESS_"
	egressStreamPfx  = "TWINFLOW_EGRESS_"
)

const (
	// streamsTimeout bounds the creation of the streams at start: a
	// NATS cluster that answers nothing for longer fails the start,
	// naming the stream.
	streamsTimeout = time.Minute
	// streamAttemptTimeout bounds one request to create or update a
	// stream, so that the next finds a meta leader elected meanwhile.
	streamAttemptTimeout = 5 * time.Second
)

// Engine is a running worker.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	budget Budget
	lock   *datadir.Lock // the data dir, for this process only

	keys      *secrets.Set
	server    *natsbus.Server // nil with an external NATS
	nc        *nats.Conn
	js        jetstream.JetStream
	store     *state.Store
	specs     *shard.Specs
	endpoints *endpoints
	handled   handledTypenames
	ranges    []keygroup.Range
	loops     []*shard.Loop
	cores     []*shard.Core
	coord     *checkpoint.Coordinator
	reads     []*ingress.Reader
	buses     []*natsbus.Reader // of the readers, closed with the pipeline
	// Cluster mode: the worker's part (nil in single-process mode) and
	// its reader of messages from other workers. plMu guards the
	// pipeline's parts, which cluster mode rebuilds after a failure.
	cl      *clusterMode
	remote  *remoteReader
	routing *routing.Stage // the router, while this worker owns key group 0
	plMu    sync.RWMutex
	// The router runs apart from the pipeline: it starts and stops as key
	// group 0 moves in and out.
	router        *router.Router
	routerSources []routing.Source
	routingStop   context.CancelFunc
	routingDone   chan struct{}

	shardMetrics  *shard.Metrics
	readerMetrics *ingress.Metrics
	coordMetrics  *checkpoint.Metrics
	pub           *egress.Publisher
	calls         *invoke.Client
	admin         *http.Server
	adminL        net.Listener
	reg           *prometheus.Registry

	// The front door (frontdoor.go), on a NATS connection of its own.
	doorConn natsbus.ConnOptions
	doorNC   *nats.Conn
	door     *frontdoor.Door
	natsDoor *frontdoor.NATSDoor
	httpDoor *frontdoor.HTTPDoor
	ingress  *http.Server
	ingressL net.Listener

	// What the admin API and the console read: each shard's state
	// (touched only on its loop), the data dir's id, the runtime's samples
	// of itself, and the admin token.
	layers     []*state.Layers
	deployment string
	// types are the protobuf messages of the module's descriptor sets and
	// the builtins; json renders and encodes values with them.
	types      *descriptors.Registry
	json       *typedjson.Codec
	platform   *platform
	adminToken *tokenFile

	cancel      context.CancelFunc // stops the loops, readers and coordinator
	callCtx     context.Context    // function calls; cancelled on shutdown
	cancelCalls context.CancelFunc
	wg          sync.WaitGroup
	callWG      sync.WaitGroup // function calls in flight
	stopOnce    sync.Once
	stopped     chan struct{}

	started time.Time

	finishing  atomic.Bool // a clean stop began
	finishOnce sync.Once
	finishDone chan struct{} // closed when the clean stop has its outcome
	finalMan   *storagev1.Manifest
	finalErr   error

	failOnce sync.Once
	failed   chan struct{} // closed when the engine cannot continue
	failErr  error         // why; set before failed is closed
}

// Start opens the data dir, restores the last complete checkpoint, and
// starts processing.
func Start(ctx context.Context, cfg Config) (_ *Engine, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	// The descriptor sets come first: a bad one stops the start before it
	// touches the data dir.
	types, err := descriptors.Load(cfg.Module.Descriptors)
	if err != nil {
		return nil, fmt.Errorf("module spec descriptors: %w", err)
	}
	budget, _ := cfg.Memory.Resolve()
	e := &Engine{cfg: cfg, log: cfg.Logger, budget: budget, stopped: make(chan struct{}), failed: make(chan struct{}),
		reg: prometheus.NewRegistry(), started: time.Now(), finishDone: make(chan struct{}),
		types: types, json: typedjson.New(types.Types())}
	defer func() {
		if err != nil {
			e.closeAll()
		}
	}()
	// The data dir's keys come first: making them checks that the data dir
	// is private.
	if e.keys, err = secrets.Ensure(cfg.DataDir, cfg.Module.UserNames()); err != nil {
		return nil, err
	}
	if err := e.keys.PublishSigningKey(); err != nil {
		return nil, err
	}
	e.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	e.registerBudget()
	e.platform = newPlatform(e)
	e.log.Info("memory budget", "budget", budget.String())

	// One process per data dir; the second is told which process holds it.
	if e.lock, err = datadir.Acquire(cfg.DataDir); err != nil {
		return nil, err
	}
	// A damaged checkpoint must stop the start, naming the file, rather
	// than restore less than it holds.
	if err := state.Verify(filepath.Join(cfg.DataDir, "state"), cfg.StateFS); err != nil {
		return nil, err
	}
	e.store, err = state.Open(filepath.Join(cfg.DataDir, "state"), state.Options{
		// Pebble reserves its memtables inside its cache; two memtables may
		// be live at once (one being flushed).
		KeyGroups: cfg.KeyGroups, CacheBytes: budget.BlockCache + budget.MemTables, MemTableBytes: budget.MemTables / 2,
		FS: cfg.StateFS, Logger: e.log,
	})
	if err != nil {
		return nil, err
	}
	e.registerDisk()
	if err := e.startNATS(ctx); err != nil {
		return nil, err
	}
	if err := e.ensureStreams(ctx); err != nil {
		return nil, err
	}
	e.reg.MustRegister(newDeadLetterCollector(e.js))
	specs, err := e.store.LoadSpecs()
	if err != nil {
		return nil, err
	}
	e.specs = shard.NewSpecs(specs)
	deployment, err := deploymentID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	e.deployment = deployment
	e.pub = egress.NewPublisher(e.nc, e.js, e.log)
	endpointTLS, err := endpointTLS(cfg.Module)
	if err != nil {
		return nil, err
	}
	e.calls = invoke.New(invoke.Options{MaxConnsPerHost: 64, SigningKey: e.keys.Signing, TLS: endpointTLS})
	e.callCtx, e.cancelCalls = context.WithCancel(context.Background())
	// The console's samples of the runtime outlive the pipelines of
	// cluster mode; they end with the calls, on shutdown. In cluster mode
	// they start once the engine is a worker (they report its lag).
	startPlatform := func() {
		e.callWG.Add(1)
		go func() { defer e.callWG.Done(); e.platform.run(e.callCtx) }()
	}
	if cfg.Cluster != "" {
		e.reg.MustRegister(newReadinessCollector(e))
		if err := e.startCluster(ctx); err != nil {
			return nil, err
		}
		startPlatform()
		// Every worker has a front door; the router takes what it writes.
		if err := e.startFrontDoor(); err != nil {
			return nil, err
		}
		go e.watchFailures()
		e.log.Info("twinflow running as a cluster worker", "admin", e.AdminURL(), "nats", e.NATSURL(), "cluster", cfg.Cluster,
			"worker", e.cl.worker, "shards", cfg.Shards, "key_groups", cfg.KeyGroups, "owned", e.cl.ownedCount())
		return e, nil
	}
	startPlatform()
	if err := e.buildPipeline(deployment, nil); err != nil {
		return nil, err
	}
	// Publish what a crash left between a checkpoint and its egress.
	if err := e.coord.Recover(ctx); err != nil {
		return nil, fmt.Errorf("publishing egress of the restored checkpoint: %w", err)
	}
	e.reg.MustRegister(newReadinessCollector(e))
	// The front door listens before the admin API answers /healthz, so
	// that whoever waits for the runtime to be up finds it open; what it
	// takes before the readers run waits in the stream.
	if err := e.startFrontDoor(); err != nil {
		return nil, err
	}
	if err := e.startAdmin(); err != nil {
		return nil, err
	}
	e.runPipeline()
	go e.watchFailures()
	if err := e.Err(); err != nil {
		return nil, err
	}
	last, _ := e.coord.Latest()
	e.log.Info("twinflow running", "admin", "http://"+e.adminL.Addr().String(), "nats", e.NATSURL(), "ingress", e.IngressURL(),
		"shards", cfg.Shards, "key_groups", cfg.KeyGroups, "restored_checkpoint", last.GetId())
	return e, nil
}

func (e *Engine) startNATS(ctx context.Context) error {
	conn := natsbus.ConnOptions{URL: e.cfg.NATSURL, CredsFile: e.cfg.NATSCredsFile, Token: e.cfg.NATSToken,
		CAFile: e.cfg.NATSCAFile, CertFile: e.cfg.NATSCertFile, KeyFile: e.cfg.NATSKeyFile,
		InboxPrefix: RuntimeInboxPrefix, Name: "twinflow-runtime", Logger: e.log}
	if e.cfg.NATSURL == "" {
		opts := natsbus.ServerOptions{
			Dir:          filepath.Join(e.cfg.DataDir, "nats"),
			Host:         e.cfg.NATSHost,
			Port:         e.cfg.NATSPort,
			Users:        NATSUsers(e.cfg.Module, e.keys),
			SyncInterval: e.cfg.NATSSyncInterval,
			MaxPayload:   int32(e.cfg.MaxPayload + 64<<10),
			Logger:       e.log,
			OnStoreFailure: func(err error) {
				e.fail(natsStoreFailure(filepath.Join(e.cfg.DataDir, "nats"), err))
			},
		}
		mqtt, devices, err := e.mqttGateway()
		if err != nil {
			return err
		}
		opts.MQTT, opts.Users = mqtt, append(opts.Users, devices...)
		if e.cfg.NATSTLSCertFile != "" {
			cfg, err := serverTLS(e.cfg.NATSTLSCertFile, e.cfg.NATSTLSKeyFile, "")
			if err != nil {
				return fmt.Errorf("embedded NATS server TLS: %w", err)
			}
			opts.TLS = cfg
			// The runtime trusts its own certificate, whatever signed it.
			conn.TLS, err = selfTLS(cfg.Certificates[0])
			if err != nil {
				return fmt.Errorf("embedded NATS server TLS: %w", err)
			}
		}
		srv, err := natsbus.StartServer(opts)
		if err != nil {
			return err
		}
		e.server = srv
		conn.URL, conn.CredsFile = srv.ClientURL(), e.keys.Runtime.SeedFile
		conn.InProcess = srv
	}
	nc, js, err := natsbus.Connect(conn)
	if err != nil {
		return err
	}
	e.nc, e.js = nc, js
	e.doorConn = conn
	e.doorConn.Name = "twinflow-frontdoor"
	return nil
}

// deploymentID returns the id of the data dir, made at its first use. It
// prefixes egress message ids, so that a wiped data dir never reuses the ids
// of records still in the streams' duplicate windows.
func deploymentID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "deployment-id")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("writing deployment id: %w", err)
	}
	return id, nil
}

// checkStart guards against a stream that no longer holds what the
// checkpoint read: after a restore into a new data dir the embedded server's
// streams start empty again, and a reader waiting for sequences past the
// stream's end would skip the first new messages.
func (e *Engine) checkStart(stream string, start uint64) (uint64, error) {
	s, err := e.js.Stream(context.Background(), stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	last := s.CachedInfo().State.LastSeq
	if start > last {
		e.log.Warn("stream is behind the checkpoint (it was recreated); reading it from its start",
			"stream", stream, "checkpoint_sequence", start, "stream_last_sequence", last)
		return 0, nil
	}
	return start, nil
}

func (e *Engine) ensureStreams(ctx context.Context) error {
	// A module built in Go has not been checked the way a parsed spec is.
	// Check it before creating any stream, so that a mistake is reported
	// by field instead of as a JetStream error, and leaves nothing behind
	// on an external server.
	if err := router.ValidateRules(e.cfg.Module.Ingresses, e.cfg.Module.Egresses); err != nil {
		return fmt.Errorf("module: %w", err)
	}
	// Clients read the dead letters and egresses by direct gets, which
	// create no consumer (see NATSUsers).
	dlq, err := e.deadLetterStream()
	if err != nil {
		return err
	}
	streams := []natsbus.StreamSpec{
		{Name: DirectStream, Subjects: router.DirectStreamSubjects, DuplicateWindow: e.cfg.DedupWindow},
		dlq,
	}
	for _, in := range e.cfg.Module.Ingresses {
		streams = append(streams, natsbus.StreamSpec{Name: ingressStreamPfx + in.Name, Subjects: []string{in.Subject}, DuplicateWindow: e.cfg.DedupWindow})
	}
	for _, eg := range e.cfg.Module.Egresses {
		streams = append(streams, natsbus.StreamSpec{Name: egressStreamPfx + eg.Name, Subjects: []string{eg.Subject, eg.Subject + ".>"}, DuplicateWindow: e.cfg.DedupWindow, AllowDirect: true})
	}
	// A JetStream cluster may answer nothing for a while (its meta group
	// electing a leader, or busy with another worker's consumers): each
	// stream is asked again, for up to streamsTimeout in all.
	ctx, cancel := context.WithTimeout(ctx, streamsTimeout)
	defer cancel()
	for _, s := range streams {
		s.Replicas = max(1, e.cfg.ClusterReplicas)
		r := backoff.Retrier{Policy: backoff.Policy{Base: 100 * time.Millisecond, Max: 2 * time.Second}}
		for {
			actx, acancel := context.WithTimeout(ctx, streamAttemptTimeout)
			_, err := natsbus.EnsureStream(actx, e.js, s)
			acancel()
			if err == nil {
				break
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && natserr.Transient(err) {
				return fmt.Errorf("stream %s: JetStream did not answer in %v (%d attempts): %w", s.Name, streamsTimeout, r.Retries()+1, err)
			}
			if !natserr.Transient(err) || ctx.Err() != nil {
				return fmt.Errorf("stream %s: %w", s.Name, err)
			}
			d := r.Next()
			e.log.Warn("creating a stream: JetStream did not answer; trying again", "stream", s.Name, "err", err,
				"retry_in", d.Round(time.Millisecond), "attempt", r.Retries())
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

// pipeline is the engine's processing parts, as of one moment.
type pipeline struct {
	loops  []*shard.Loop
	layers []*state.Layers // each shard's state, read only on its loop
	ranges []keygroup.Range
	reads  []*ingress.Reader
	coord  *checkpoint.Coordinator
	remote *remoteReader
}

// pl returns the current pipeline.
func (e *Engine) pl() pipeline {
	e.plMu.RLock()
	defer e.plMu.RUnlock()
	return pipeline{loops: e.loops, reads: e.reads, coord: e.coord, layers: e.layers, ranges: e.ranges, remote: e.remote}
}

// currentEndpoints returns the pipeline's endpoints; cluster mode replaces
// them with the pipeline.
func (e *Engine) currentEndpoints() *endpoints {
	e.plMu.RLock()
	defer e.plMu.RUnlock()
	return e.endpoints
}

// endpointFor returns the endpoint serving a function type.
func (e *Engine) endpointFor(ft string) (*shard.Endpoint, bool) {
	return e.currentEndpoints().For(ft)
}

// runPipeline starts the shard loops, the readers and the coordinator.
func (e *Engine) runPipeline() {
	runCtx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	pl := e.pl()
	for _, l := range pl.loops {
		e.wg.Add(1)
		go func() { defer e.wg.Done(); l.Run(runCtx) }()
	}
	for _, r := range pl.reads {
		e.wg.Add(1)
		go func() { defer e.wg.Done(); r.Run(runCtx) }()
	}
	if pl.remote != nil {
		e.wg.Add(1)
		go func() { defer e.wg.Done(); pl.remote.Run(runCtx) }()
		e.wg.Add(1)
		go func() { defer e.wg.Done(); e.cl.snapshots(runCtx) }()
		e.wg.Add(1)
		go func() { defer e.wg.Done(); e.cl.trimmer.run(runCtx) }()
	}
	if st := e.routingStage(); st != nil {
		e.startRouting(st)
	}
	e.wg.Add(1)
	go func() { defer e.wg.Done(); _ = pl.coord.Run(runCtx) }()
}

// stopPipeline stops what runPipeline started and waits for it: work not
// checkpointed is dropped, as in a crash.
func (e *Engine) stopPipeline() {
	e.stopRouting()
	if e.cancel != nil {
		e.cancel()
	}
	e.wg.Wait()
	e.plMu.RLock()
	buses := e.buses
	e.plMu.RUnlock()
	for _, b := range buses {
		b.Close()
	}
}

// routingStage returns the pipeline's router, nil when it has none.
func (e *Engine) routingStage() *routing.Stage {
	e.plMu.RLock()
	defer e.plMu.RUnlock()
	return e.routing
}

// startRouting runs st as the worker's router until stopRouting.
func (e *Engine) startRouting(st *routing.Stage) {
	e.stopRouting()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	e.plMu.Lock()
	e.routing, e.routingStop, e.routingDone = st, cancel, done
	e.plMu.Unlock()
	go func() { defer close(done); _ = st.Run(ctx) }()
}

// stopRouting stops the router, if one runs, and waits for it.
func (e *Engine) stopRouting() {
	e.plMu.Lock()
	cancel, done := e.routingStop, e.routingDone
	e.routing, e.routingStop, e.routingDone = nil, nil, nil
	e.plMu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// readerNames lists the readers' names: their streams; in cluster mode the
// partitioned ingress and the reader of messages from other workers.
func (e *Engine) readerNames() []string {
	if e.cl != nil {
		return []string{e.cl.c.InStream(), remoteReaderName}
	}
	names := []string{DirectStream}
	for _, in := range e.cfg.Module.Ingresses {
		names = append(names, ingressStreamPfx+in.Name)
	}
	return names
}

// buildPipeline creates the shards, readers and coordinator; in cluster
// mode (own not nil) over the owned key groups only.
func (e *Engine) buildPipeline(deployment string, own *ownership) (err error) {
	e.plMu.Lock()
	defer e.plMu.Unlock()
	e.remote, e.buses, e.reads, e.routing = nil, nil, nil, nil
	defer func() {
		if err != nil { // what was built of it is not run: close its consumers
			for _, b := range e.buses {
				b.Close()
			}
			e.buses = nil
		}
	}()
	cfg := e.cfg
	rt, err := router.New(cfg.Module.Ingresses, router.Limits{MaxPayload: cfg.MaxPayload})
	if err != nil {
		return err
	}
	e.router = rt
	egresses, err := router.NewEgresses(cfg.Module.Egresses)
	if err != nil {
		return err
	}
	e.ranges = keygroup.Assign(cfg.KeyGroups, cfg.Shards)
	if e.shardMetrics == nil { // registered once, kept across rebuilds
		e.shardMetrics, e.readerMetrics = shard.NewMetrics(e.reg), ingress.NewMetrics(e.reg)
	}
	shardMetrics := e.shardMetrics
	e.endpoints = newEndpoints(cfg.Module, cfg.Shards)
	endpoints := e.endpoints
	locate := func(id string) (int, int) {
		kg := keygroup.Of(id, cfg.KeyGroups)
		return keygroup.ShardOf(kg, cfg.KeyGroups, cfg.Shards), kg
	}
	readerStreams := []routing.Source{{Stream: DirectStream, Ingress: router.DirectIngress}}
	for _, in := range cfg.Module.Ingresses {
		readerStreams = append(readerStreams, routing.Source{Stream: ingressStreamPfx + in.Name, Ingress: in.Name})
	}
	e.routerSources = readerStreams
	sources := len(readerStreams) + 1 // readers and the coordinator
	var (
		owned func(int) bool
		moves func(uint64) ([]int, []int)
	)
	if own != nil {
		// The reader of the partitioned ingress, the reader of messages
		// from other workers, and the coordinator.
		sources = 3
		owned, moves = own.Owns, e.cl.shardMoves
	}
	e.loops = make([]*shard.Loop, cfg.Shards)
	e.cores = make([]*shard.Core, cfg.Shards)
	e.layers = make([]*state.Layers, cfg.Shards)
	envs := make([]*shardEnv, cfg.Shards)
	pr := &peers{loops: e.loops}
	for i := range e.loops {
		scfg := shard.Config{
			Index: i, Shards: cfg.Shards, KeyGroups: cfg.KeyGroups, KGLo: e.ranges[i].Lo, KGHi: e.ranges[i].Hi,
			Sources: sources, Locate: locate, Owned: owned, Moves: moves, EndpointFor: endpoints.For, Egress: egresses,
			MaxAddressQueue: cfg.MaxAddressQueue,
			MaxQueueBytes:   e.budget.Queues / int64(cfg.Shards),
			MaxOverlayBytes: e.budget.Uncommitted / int64(2*cfg.Shards),
			MaxSpillBytes:   cfg.MaxSpillBytes / int64(cfg.Shards),
			Retry:           backoff.Policy{Base: cfg.RetryBase, Max: cfg.RetryMax},
			Limits:          shard.Limits{MaxPayload: cfg.MaxPayload},
			DedupWindow:     cfg.DedupWindow,
			TimerScanLimit:  1024,
		}
		envs[i] = &shardEnv{e: e, peers: pr, index: i}
		e.layers[i] = state.NewLayers(e.store, e.cfg.DedupWindow, e.log)
		e.cores[i] = shard.NewCore(scfg, envs[i], e.layers[i], e.specs, shardMetrics, e.log)
		e.loops[i] = shard.NewLoop(e.cores[i], shard.NewInbox(), 10*time.Millisecond)
		envs[i].loop = e.loops[i]
	}
	last, _, err := e.store.LatestManifest()
	if err != nil {
		return err
	}
	readerMetrics := e.readerMetrics
	shardsView := &shardSet{e: e, peers: pr}
	readers := make([]checkpoint.Reader, 0, len(readerStreams))
	if own == nil {
		for i, rs := range readerStreams {
			start, err := e.checkStart(rs.Stream, last.GetReaderSequences()[rs.Stream])
			if err != nil {
				return err
			}
			bus, err := natsbus.NewReader(context.Background(), e.js, rs.Stream, start, natsbus.ReaderOptions{Logger: e.log})
			if err != nil {
				return fmt.Errorf("reading stream %s: %w", rs.Stream, err)
			}
			dec := &ingress.StreamDecoder{Stream: rs.Stream, Ingress: rs.Ingress, Router: rt}
			r := ingress.New(ingress.Config{Name: rs.Stream, Source: cfg.Shards + i}, bus, start, dec, shardsView, nil, e.pub, readerMetrics, e.log)
			e.buses = append(e.buses, bus)
			e.reads = append(e.reads, r)
			readers = append(readers, r)
		}
	} else {
		r, err := e.cl.routedReader(own, shardsView, cfg.Shards)
		if err != nil {
			return err
		}
		readers = append(readers, r)
		cm := e.cl
		start, err := e.clusterStart(own, cm.c.MessageStream(), remoteReaderName)
		if err != nil {
			return err
		}
		filter := []string{cm.c.MessageSubject(-1)}
		bus, err := natsbus.NewReader(context.Background(), e.js, cm.c.MessageStream(), start,
			natsbus.ReaderOptions{Logger: e.log, FilterSubjects: filter})
		if err != nil {
			return fmt.Errorf("reading the messages from other workers: %w", err)
		}
		e.buses = append(e.buses, bus)
		e.remote = &remoteReader{
			bus: bus, source: cfg.Shards + len(readers), k: cfg.KeyGroups,
			prefix: strings.TrimSuffix(cm.c.MessageSubject(-1), "*"), own: own.clone(), moveAt: cm.moveAt, filter: filter, shards: shardsView,
			mark: cm.storedMark, m: cm.m, log: e.log.With("reader", remoteReaderName), lastSeq: start,
			marks: map[[2]int]uint64{}, batches: make([][]shard.Item, cfg.Shards), snaps: map[uint64]map[[2]int]uint64{},
		}
		readers = append(readers, e.remote)
		if own.Owns(0) {
			e.routing = cm.routingStage(cm.owned[0])
		}
	}
	coordShards := make([]checkpoint.Shard, len(e.loops))
	for i, l := range e.loops {
		coordShards[i] = l
	}
	ccfg := checkpoint.Config{Interval: cfg.CheckpointInterval, DeploymentID: deployment, OnComplete: e.platform.checkpointDone}
	if own != nil {
		// The router trims the source streams, the committer the
		// partitioned ingress.
		ccfg.Commit, ccfg.Begin = e.cl.commit, e.cl.beginCheckpoint
	} else {
		trim := &streamTrimmer{js: e.js, log: e.log, done: map[string]uint64{}}
		ccfg.OnComplete = func(m *storagev1.Manifest) {
			trim.trim(m)
			e.platform.checkpointDone(m)
		}
	}
	if e.coordMetrics == nil {
		e.coordMetrics = checkpoint.NewMetrics(e.reg)
	}
	e.coord = checkpoint.New(ccfg, e.store, coordShards, readers, e.pub, e.coordMetrics, e.log)
	pr.coord = e.coord
	for _, r := range e.reads {
		r.SetBarriers(e.coord)
	}
	if e.remote != nil {
		e.remote.barriers = e.coord
	}
	for _, c := range e.cores {
		if err := c.Restore(); err != nil {
			return fmt.Errorf("restoring mailboxes: %w", err)
		}
	}
	if own != nil {
		return e.coord.Recover(context.Background())
	}
	return nil
}

// clusterStart returns where a reader of stream starts in cluster mode:
// after the lowest position of the owned key groups, or at the stream's
// end when none is owned.
func (e *Engine) clusterStart(own *ownership, stream, reader string) (uint64, error) {
	if seq, ok := own.from(reader); ok {
		return seq, nil
	}
	s, err := e.js.Stream(context.Background(), stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	return s.CachedInfo().State.LastSeq, nil
}

func (e *Engine) registerBudget() {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "twinflow_memory_budget_bytes", Help: "The memory budget's parts."}, []string{"part"})
	b := e.budget
	for part, v := range map[string]int64{"total": b.Total, "block_cache": b.BlockCache, "memtables": b.MemTables,
		"queues": b.Queues, "uncommitted": b.Uncommitted, "reserve": b.Reserve} {
		g.WithLabelValues(part).Set(float64(v))
	}
	e.reg.MustRegister(g)
}

func (e *Engine) startAdmin() error {
	l, err := e.adminListener()
	if err != nil {
		return err
	}
	e.adminL = l
	mux := http.NewServeMux()
	path, h := twinflowv1connect.NewAdminServiceHandler(&adminService{e: e}, connect.WithReadMaxBytes(int(e.cfg.MaxAdminRequestBytes)))
	mux.Handle(path, h)
	mux.HandleFunc("/signing-keys", e.serveSigningKeys)
	mux.Handle("/metrics", promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/livez", e.handleLive)
	mux.HandleFunc("/healthz", e.handleLive) // the name of earlier releases
	mux.HandleFunc("/readyz", e.handleReady)
	e.adminToken = &tokenFile{path: e.keys.AdminTokenFile}
	sessions := e.consoleSessions()
	ui, err := e.consoleHandler(sessions)
	if err != nil {
		l.Close()
		return err
	}
	mux.Handle("/ui", ui)
	mux.Handle("/ui/", ui)
	e.admin = &http.Server{Handler: e.guardAdmin(mux, sessions), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.admin.Serve(l) }()
	return nil
}

// AdminURL is the base URL of the admin API.
func (e *Engine) AdminURL() string {
	if e.cfg.AdminTLSCertFile != "" {
		return "https://" + e.adminL.Addr().String()
	}
	return "http://" + e.adminL.Addr().String()
}

// NATSURL is the URL of the NATS server in use.
func (e *Engine) NATSURL() string { return e.nc.ConnectedUrl() }

// Budget is the resolved memory budget.
func (e *Engine) Budget() Budget { return e.budget }

// Done is closed when the engine has stopped.
func (e *Engine) Done() <-chan struct{} { return e.stopped }

// Checkpoint takes a checkpoint now.
func (e *Engine) Checkpoint(ctx context.Context) (*storagev1.Manifest, error) {
	return e.pl().coord.Checkpoint(ctx)
}

// Stop finishes cleanly, as Flink's FLIP-147 asks of a job that ends: intake
// stops, in-flight and queued work finishes, a final checkpoint commits
// everything processed and its egress is published; with a savepoint dir the
// result is also copied there. Then everything closes.
func (e *Engine) Stop(ctx context.Context, savepointDir string) (*storagev1.Manifest, error) {
	man, err := e.finish(ctx, savepointDir)
	e.shutdown()
	return man, err
}

// finish does the clean part of stopping, once; later calls wait for the
// first one's outcome, or for ctx.
func (e *Engine) finish(ctx context.Context, savepointDir string) (*storagev1.Manifest, error) {
	e.finishing.Store(true)
	e.finishOnce.Do(func() {
		go func() {
			defer close(e.finishDone)
			if e.cl != nil {
				// Key groups stay where they are until the final checkpoint.
				e.cl.stopDriver()
			}
			e.finalMan, e.finalErr = e.drainAndCheckpoint()
			if e.cl != nil && e.finalErr == nil {
				lctx, cancel := context.WithTimeout(context.Background(), e.cfg.StopTimeout)
				e.cl.leave(lctx)
				cancel()
			}
			if e.finalErr == nil && savepointDir != "" {
				e.finalErr = e.writeSavepoint(savepointDir)
				if e.finalErr == nil {
					e.log.Info("savepoint written", "dir", savepointDir, "checkpoint", e.finalMan.GetId())
				}
			}
		}()
	})
	select {
	case <-e.finishDone:
		return e.finalMan, e.finalErr
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the clean stop: %w", ctx.Err())
	}
}

// shutdown closes everything, once.
func (e *Engine) shutdown() {
	e.stopOnce.Do(func() {
		e.closeAll()
		close(e.stopped)
	})
}

// drainAndCheckpoint stops intake, lets the queued and in-flight work
// finish for up to StopTimeout, and then takes the final checkpoint of what
// is consistent: work that did not finish stays in its mailboxes and runs
// after the next start. The final checkpoint and its egress get another
// StopTimeout.
func (e *Engine) drainAndCheckpoint() (*storagev1.Manifest, error) {
	// The front door takes no more messages; what it wrote is in the
	// stream, read after the next start if not before the final checkpoint.
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.StopTimeout)
	e.closeFrontDoor(ctx)
	cancel()
	e.log.Info("stopping: intake paused, finishing queued work", "deadline", e.cfg.StopTimeout)
	man, err := e.quiesce()
	if err != nil {
		return nil, fmt.Errorf("final checkpoint: %w", err)
	}
	e.log.Info("final checkpoint complete", "id", man.GetId())
	return man, nil
}

// quiesce is the end of a pipeline's work, as FLIP-147 asks of a job that
// ends: the readers take no more messages, queued and in-flight work
// finishes (for up to the stop timeout), and a last checkpoint commits it;
// no checkpoint follows it. A clean stop ends with it; cluster mode does
// the same for each key group it hands off (clustermove.go).
func (e *Engine) quiesce() (*storagev1.Manifest, error) {
	pl := e.pl()
	for _, r := range pl.reads {
		r.Pause()
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.StopTimeout)
	defer cancel()
	if busy := e.waitIdle(ctx); busy > 0 {
		e.log.Warn("checkpointing before queued work finished; it stays in the checkpoint's mailboxes",
			"shards_busy", busy, "waited", e.cfg.StopTimeout)
	}
	ctx, cancel = context.WithTimeout(context.Background(), e.cfg.StopTimeout)
	defer cancel()
	pl.coord.Hold()
	return pl.coord.Checkpoint(ctx)
}

// waitIdle waits until no shard has work that can progress, at once (work
// queued in mailboxes may produce more work for other shards), or ctx
// ends; it returns how many shards were busy at the end. The backlog of
// failing addresses and unreachable endpoints does not hold a stop up.
func (e *Engine) waitIdle(ctx context.Context) int {
	for {
		busy := 0
		for _, l := range e.pl().loops {
			working := true
			_ = l.Do(ctx, func(c *shard.Core) { working = c.Working() })
			if working || l.Inbox().Bytes() > 0 {
				busy++
			}
		}
		if busy == 0 {
			return 0
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return busy
		}
	}
}

// closeAll stops every part without a final checkpoint: what is not
// committed is lost, exactly as in a crash.
func (e *Engine) closeAll() {
	e.shutdownFrontDoor()
	if e.cl != nil {
		e.cl.stopDriver()
	}
	if e.cancel != nil {
		e.cancel()
	}
	if e.cancelCalls != nil {
		e.cancelCalls()
	}
	if e.store != nil {
		// A checkpoint waiting for disk space must not hold up the stop.
		e.store.StopWaiting()
	}
	e.stopPipeline()
	e.callWG.Wait()
	if e.admin != nil {
		// Shutdown lets a Stop request being answered finish first.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = e.admin.Shutdown(ctx)
		cancel()
	}
	if e.calls != nil {
		e.calls.Close()
	}
	if e.pub != nil {
		e.pub.Close()
	}
	if e.nc != nil {
		e.nc.Close()
	}
	if e.server != nil {
		e.server.Shutdown()
	}
	if e.store != nil {
		if err := e.store.Close(); err != nil {
			e.log.Error("closing store", "err", err)
		}
	}
	if e.lock != nil {
		if err := e.lock.Release(); err != nil {
			e.log.Error("releasing the data dir", "err", err)
		}
	}
}

// Kill stops at once without a checkpoint: what is not committed is lost,
// as in a crash.
func (e *Engine) Kill() { e.shutdown() }

// shardEnv is a shard's view of the engine.
type shardEnv struct {
	e     *Engine
	peers *peers
	index int
	loop  *shard.Loop
}

// peers are the loops and the coordinator of one pipeline, as its shards
// and readers see them.
type peers struct {
	loops []*shard.Loop
	coord *checkpoint.Coordinator
}

func (s *shardEnv) Now() time.Time  { return s.e.cfg.Now() }
func (s *shardEnv) Wall() time.Time { return time.Now() }

func (s *shardEnv) Send(to int, it shard.Item) { s.peers.loops[to].Inbox().Push(it) }

func (s *shardEnv) Call(c *shard.Call) {
	s.e.callWG.Add(1)
	go func() {
		defer s.e.callWG.Done()
		started := time.Now()
		resp, err := s.e.calls.Invoke(s.e.callCtx, c.Endpoint.URL, c.Endpoint.Timeout, c.Request)
		s.e.platform.observeCall(c.Request, time.Since(started))
		if err != nil && invoke.Rejected(err) {
			err = &shard.RejectedError{Err: err}
		}
		if err == nil {
			s.e.handled.observe(c.Request, resp)
		}
		s.loop.Completed(c, resp, err)
	}()
}

func (s *shardEnv) PublishNow(recs []*storagev1.EgressRecord) bool { return s.e.pub.PublishAsync(recs) }

func (s *shardEnv) Reply(rec *storagev1.EgressRecord) { s.e.pub.Reply(rec) }

func (s *shardEnv) Part(p *shard.Part) { s.peers.coord.Part(p) }

func (s *shardEnv) SaveSpecs(functionType string, specs []*twinflowv1.StateSpec) error {
	_, err := s.e.store.SaveSpecs(functionType, specs)
	return err
}

func (s *shardEnv) WantCheckpoint() { s.peers.coord.Want() }

// shardSet is the readers' view of the shards.
type shardSet struct {
	e     *Engine
	peers *peers
}

func (s *shardSet) Locate(id string) int {
	return keygroup.ShardOf(keygroup.Of(id, s.e.cfg.KeyGroups), s.e.cfg.KeyGroups, s.e.cfg.Shards)
}
func (s *shardSet) Inbox(i int) *shard.Inbox { return s.peers.loops[i].Inbox() }
func (s *shardSet) Saturated(i int) bool {
	// Nothing more is taken in while checkpoints cannot be written.
	return s.peers.loops[i].Saturated() || s.e.store.DiskFull() != nil
}
func (s *shardSet) Count() int { return len(s.peers.loops) }

// streamTrimmer deletes the ingress messages that a complete checkpoint has
// read past: a restore never reads before the recorded sequence, so they
// are not needed again, and the streams stay as small as the backlog.
//
// A publisher that repeats a trimmed message after a restart of NATS (which
// rebuilds its duplicate map only from the messages a stream still holds)
// gets it stored again; the addresses it targets drop it, since they
// remember the keys of the messages they received for the dedup window
// (shard.Envelope.Key).
type streamTrimmer struct {
	js   jetstream.JetStream
	log  *slog.Logger
	done map[string]uint64 // sequence trimmed up to, by stream
}

func (t *streamTrimmer) trim(man *storagev1.Manifest) {
	for stream, seq := range man.GetReaderSequences() {
		if seq == 0 || t.done[stream] >= seq {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := t.js.Stream(ctx, stream)
		if err == nil {
			// Keep seq+1 onward: everything up to seq is covered by the checkpoint.
			err = s.Purge(ctx, jetstream.WithPurgeSequence(seq+1))
		}
		cancel()
		if err != nil {
			t.log.Warn("trimming ingress stream failed", "stream", stream, "up_to", seq, "err", err)
			continue
		}
		t.done[stream] = seq
	}
}
