// Package clustertest runs a real NATS cluster for tests: three nats-server
// processes with JetStream, routed to each other on loopback, each with its
// own store directory, so that replicated (R3) streams, KV buckets and object
// stores behave as in production. A test can kill (SIGKILL), stop (SIGTERM),
// pause (SIGSTOP) and restart any one server.
//
// The servers are processes built from the nats-server module this module
// requires (see natsbustest.BuildExternalServer), not servers inside the test
// binary: a kill is then a real kill, and the servers are not slowed down by
// the race detector the tests run under.
package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/runtime/natsbus/natsbustest"
)

// Size is the number of servers of a cluster: the smallest that keeps a
// replicated stream available when one server is down.
const Size = 3

// readyTimeout bounds the wait for a server to start and for the cluster
// to elect its JetStream meta leader.
const readyTimeout = 30 * time.Second

// Cluster is a running three-server NATS cluster. Its methods other than
// Connect and URLs must be called from the goroutine of the test that
// started it.
type Cluster struct {
	t       testing.TB
	bin     string
	opts    Options
	servers [Size]*Server
}

// Server is one server of a Cluster.
type Server struct {
	Name    string // server name, n0, n1 or n2
	dir     string // holds the config file and the JetStream store
	client  int    // client port
	route   int    // cluster (route) port
	monitor int    // HTTP monitoring port
	proc    *process
	logs    *logBuffer
}

// Options shape a cluster. The zero value is the default.
type Options struct {
	// SyncAlways makes the servers fsync every JetStream write
	// ("sync_interval: always"), as Twinflow's embedded server does. By
	// default they sync every two minutes, as nats-server does: a killed
	// process loses nothing (the page cache keeps it), a machine that loses
	// power may.
	SyncAlways bool
}

// Start starts a three-server cluster with JetStream and waits until every
// server is healthy (JetStream has a meta leader). The servers are killed
// when the test ends; their logs are shown if it failed.
func Start(t testing.TB) *Cluster {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: natsbustest.BuildExternalServer(t), opts: opts}
	root := t.TempDir()
	ports := freePorts(t, 3*Size)
	for i := range c.servers {
		c.servers[i] = &Server{
			Name:    fmt.Sprintf("n%d", i),
			dir:     filepath.Join(root, fmt.Sprintf("n%d", i)),
			client:  ports[3*i],
			route:   ports[3*i+1],
			monitor: ports[3*i+2],
			logs:    &logBuffer{},
		}
	}
	for i, s := range c.servers {
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.configPath(), []byte(c.config(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			if s.proc != nil {
				s.proc.kill()
			}
			if t.Failed() {
				t.Logf("nats-server %s log:\n%s", s.Name, s.logs.String())
			}
		}
	})
	for i := range c.servers {
		c.launch(i)
	}
	c.WaitHealthy()
	return c
}

// config returns the configuration file of server i.
func (c *Cluster) config(i int) string {
	s := c.servers[i]
	var routes []string
	for j, o := range c.servers {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.route))
		}
	}
	sync := ""
	if c.opts.SyncAlways {
		sync = "\n  sync_interval: always"
	}
	return fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q%s
}
cluster {
  name: twinflow-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, s.Name, s.client, s.monitor, filepath.Join(s.dir, "js"), sync, s.route, strings.Join(routes, ", "))
}

func (s *Server) configPath() string { return filepath.Join(s.dir, "nats.conf") }

// URL returns the client URL of server i.
func (c *Cluster) URL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.servers[i].client)
}

// URLs returns the client URLs of all servers, comma-separated, as a client
// that fails over between them takes them.
func (c *Cluster) URLs() string {
	urls := make([]string, Size)
	for i := range c.servers {
		urls[i] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// Server returns server i.
func (c *Cluster) Server(i int) *Server { return c.servers[i] }

// Index returns the index of the server called name, -1 when there is none.
func (c *Cluster) Index(name string) int {
	for i, s := range c.servers {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// launch starts server i's process and waits until it accepts clients.
func (c *Cluster) launch(i int) {
	c.t.Helper()
	s := c.servers[i]
	if s.proc != nil {
		c.t.Fatalf("clustertest: server %s is already running", s.Name)
	}
	p, err := startProcess(c.bin, s.configPath(), s.logs)
	if err != nil {
		c.t.Fatalf("clustertest: start server %s: %v\n%s", s.Name, err, s.logs.String())
	}
	s.proc = p
}

// Kill kills server i with SIGKILL and waits until it has exited: nothing
// is flushed and no leadership is handed over.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.running(i).kill()
	c.servers[i].proc = nil
}

// Stop stops server i with SIGTERM and waits until it has exited: the
// server hands its leaderships over and flushes its store first.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	p := c.running(i)
	if err := p.stop(20 * time.Second); err != nil {
		c.t.Fatalf("clustertest: stop server %s: %v", c.servers[i].Name, err)
	}
	c.servers[i].proc = nil
}

// Pause suspends server i with SIGSTOP: it keeps its sockets open and
// answers nothing, like a machine that froze. Resume continues it.
func (c *Cluster) Pause(i int) {
	c.t.Helper()
	p := c.running(i)
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatalf("clustertest: pause server %s: %v", c.servers[i].Name, err)
	}
	// The signal is delivered asynchronously: until the kernel has stopped
	// every thread, the server may still answer.
	deadline := time.Now().Add(readyTimeout)
	for !stopped(p.cmd.Process.Pid) {
		if time.Now().After(deadline) {
			c.t.Fatalf("clustertest: server %s not stopped %s after SIGSTOP", c.servers[i].Name, readyTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stopped reports whether every thread of the process is in the stopped
// state, read from /proc/<pid>/task/<tid>/stat: the state is the field
// after the parenthesised name.
func stopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(task)
		if err != nil {
			return false
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) || stat[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Resume continues server i after Pause.
func (c *Cluster) Resume(i int) {
	c.t.Helper()
	if err := c.running(i).cmd.Process.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatalf("clustertest: resume server %s: %v", c.servers[i].Name, err)
	}
}

// Restart starts server i again after Kill or Stop, with the same name,
// ports and store, and waits until the whole cluster is healthy again.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.launch(i)
	c.WaitHealthy()
}

func (c *Cluster) running(i int) *process {
	c.t.Helper()
	p := c.servers[i].proc
	if p == nil {
		c.t.Fatalf("clustertest: server %s is not running", c.servers[i].Name)
	}
	return p
}

// WaitHealthy waits until every running server reports itself healthy
// (JetStream is up and in contact with a meta leader) and the meta leader
// sees every running server as a current peer: until then, creating a
// replicated stream can fail with "no suitable peers for placement".
func (c *Cluster) WaitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(readyTimeout)
	running := 0
	for i, s := range c.servers {
		if s.proc == nil {
			continue
		}
		running++
		for {
			err := s.healthy()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("clustertest: server %d (%s) not healthy after %s: %v\n%s", i, s.Name, readyTimeout, err, s.logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for {
		current, err := c.currentPeers()
		if err == nil && current == running {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("clustertest: the meta leader sees %d of %d running servers as current after %s (%v)", current, running, readyTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// currentPeers returns how many servers the meta leader sees as current
// peers, itself included.
func (c *Cluster) currentPeers() (int, error) {
	for _, s := range c.servers {
		if s.proc == nil {
			continue
		}
		var jsz struct {
			Meta *struct {
				Leader   string `json:"leader"`
				Replicas []struct {
					Name    string `json:"name"`
					Current bool   `json:"current"`
					Offline bool   `json:"offline"`
				} `json:"replicas"`
			} `json:"meta_cluster"`
		}
		if err := s.monitoring("/jsz", &jsz); err != nil {
			return 0, err
		}
		if jsz.Meta == nil || jsz.Meta.Leader != s.Name {
			continue
		}
		n := 1
		for _, r := range jsz.Meta.Replicas {
			if r.Current && !r.Offline {
				n++
			}
		}
		return n, nil
	}
	return 0, errors.New("no running server leads the meta group")
}

// monitoring reads a JSON page of the server's monitoring endpoint.
func (s *Server) monitoring(path string, v any) error {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", s.monitor, path))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// healthy asks the server's monitoring endpoint whether it is healthy.
func (s *Server) healthy() error {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", s.monitor))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// StreamLeader returns the index of the running server that leads the
// stream, waiting until there is one: just after a server stopped, the
// cluster may still name it for a moment.
func (c *Cluster) StreamLeader(js jetstream.JetStream, stream string) int {
	c.t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := js.Stream(ctx, stream)
		var leader string
		if err == nil {
			if ci := s.CachedInfo().Cluster; ci != nil {
				leader = ci.Leader
			}
		}
		cancel()
		if i := c.Index(leader); i >= 0 && c.servers[i].proc != nil {
			return i
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("clustertest: stream %s has no leader after %s (last error: %v)", stream, readyTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Connect connects to the cluster through all its servers and returns the
// connection and its JetStream context; the connection is closed when t
// ends. It reconnects to another server when its server goes away. t may be
// a subtest of the test that started the cluster.
func (c *Cluster) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.URLs(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.Timeout(2*time.Second),
		nats.Name(t.Name()),
	)
	if err != nil {
		t.Fatalf("clustertest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("clustertest: jetstream: %v", err)
	}
	return nc, js
}

// freePorts returns n distinct ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("clustertest: free port: %v", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// process is a running nats-server.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited and its output is read
}

// startProcess runs bin with the config file and waits until the server
// says it is ready for clients.
func startProcess(bin, config string, logs *logBuffer) (*process, error) {
	cmd := exec.Command(bin, "-c", config)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			logs.add(sc.Text())
			if !signalled && strings.Contains(sc.Text(), "Server is ready") {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		_ = cmd.Wait()
		_ = pw.Close()
		<-scanned
		close(p.exited)
	}()
	select {
	case <-ready:
		return p, nil
	case <-p.exited:
		return nil, errors.New("nats-server exited before it was ready")
	case <-time.After(readyTimeout):
		p.kill()
		return nil, fmt.Errorf("nats-server not ready after %s", readyTimeout)
	}
}

func (p *process) kill() {
	// A paused process must be continued to die promptly on some systems.
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Kill()
	<-p.exited
}

func (p *process) stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("did not exit within %s of SIGTERM; killed", timeout)
	}
}

// logBuffer keeps a server's log across its restarts.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(line)
	l.buf.WriteByte('\n')
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// String formats s for failure messages.
func (s *Server) String() string { return s.Name + " (client port " + strconv.Itoa(s.client) + ")" }

// MoveLeader makes server i the leader of the stream (a KV bucket's stream
// is KV_<bucket>, an object store's OBJ_<bucket>) and waits until it is, so
// that a test can kill the leaders of several streams at once.
func (c *Cluster) MoveLeader(js jetstream.JetStream, stream string, i int) {
	c.t.Helper()
	req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, c.servers[i].Name)
	deadline := time.Now().Add(readyTimeout)
	for c.StreamLeader(js, stream) != i {
		if time.Now().After(deadline) {
			c.t.Fatalf("clustertest: server %s did not become the leader of %s", c.servers[i].Name, stream)
		}
		_, _ = js.Conn().Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, []byte(req), 2*time.Second)
		time.Sleep(100 * time.Millisecond)
	}
}

// PID returns the process id of server i, 0 when it is not running: for
// measuring what the servers cost.
func (c *Cluster) PID(i int) int {
	if p := c.servers[i].proc; p != nil {
		return p.cmd.Process.Pid
	}
	return 0
}
