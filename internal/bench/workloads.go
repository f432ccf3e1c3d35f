package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinflow/twinflow/client"
	"github.com/twinflow/twinflow/internal/bench/workload"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/secrets"
)

// The ingress paths a workload can take.
const (
	// pathDirect publishes to the direct ingress subject with JetStream,
	// one message per stored stream message; a request carries its inbox
	// in a header (natsbus.Request).
	pathDirect = "direct"
	// pathNATS sends core NATS requests to the runtime's front door
	// (twinflow.send/call), which stores what arrives together as one batch.
	pathNATS = "nats"
	// pathHTTP posts to the front door's HTTP listener (/send, /call).
	pathHTTP = "http"
	// pathClient sends and calls with package client over one connection:
	// the process's concurrent messages share its writes of batches to the
	// direct ingress, and replies come to the client's inboxes.
	pathClient = "client"
)

var allPaths = []string{pathDirect, pathNATS, pathHTTP, pathClient}

// ingressClient sends one message and waits for its acknowledgement, or a
// request and waits for its reply. It is safe for concurrent use.
type ingressClient interface {
	send(ctx context.Context, id string, data []byte) error
	call(ctx context.Context, id string, data []byte) ([]byte, error)
	close()
}

// client returns a client of the env's engine on path.
func (v *env) client(path string) (ingressClient, error) {
	access := v.e.Access()
	switch path {
	case pathDirect:
		return &directClient{p: v.pub}, nil
	case pathNATS:
		// A few connections, so that one connection's lock and socket do
		// not become the bottleneck of many clients.
		c := &natsClient{}
		for range 4 {
			p, err := dialPublisher(access.NATSURL, access.NATSCreds, access.NATSInboxPrefix, v.d.log)
			if err != nil {
				c.close()
				return nil, err
			}
			c.conns = append(c.conns, p.nc)
		}
		return c, nil
	case pathClient:
		p, err := dialPublisher(access.NATSURL, access.NATSCreds, access.NATSInboxPrefix, v.d.log)
		if err != nil {
			return nil, err
		}
		reg := prometheus.NewRegistry()
		c, err := client.New(p.nc, client.Options{Metrics: reg})
		if err != nil {
			p.nc.Close()
			return nil, err
		}
		return &libClient{c: c, nc: p.nc, reg: reg}, nil
	case pathHTTP:
		tok, err := secrets.ReadIngressToken(access.IngressTokenFile)
		if err != nil {
			return nil, err
		}
		return &httpClient{url: access.IngressURL, token: "Bearer " + tok, http: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512, DialContext: (&net.Dialer{}).DialContext,
		}}}, nil
	}
	return nil, fmt.Errorf("unknown path %q", path)
}

// directClient publishes with JetStream to twinflow.in.bench.counter.<id>.
type directClient struct{ p *pubConn }

func (c *directClient) send(ctx context.Context, id string, data []byte) error {
	_, err := c.p.js.PublishMsg(ctx, &nats.Msg{Subject: subjectPrefix + id, Header: msgHeader, Data: data})
	return err
}

func (c *directClient) call(ctx context.Context, id string, data []byte) ([]byte, error) {
	reply, err := natsbus.Request(ctx, c.p.js, subjectPrefix+id, msgHeader, data)
	if err != nil {
		return nil, err
	}
	return replyData(reply)
}

func (c *directClient) close() {}

// natsClient sends core NATS requests to the front door.
type natsClient struct {
	conns []*nats.Conn
	next  atomic.Uint64
}

var (
	sendPrefix = router.SendSubjectPrefix + strings.ReplaceAll(workload.FunctionType, "/", ".") + "."
	callPrefix = router.CallSubjectPrefix + strings.ReplaceAll(workload.FunctionType, "/", ".") + "."
)

func (c *natsClient) conn() *nats.Conn { return c.conns[c.next.Add(1)%uint64(len(c.conns))] }

func (c *natsClient) send(ctx context.Context, id string, data []byte) error {
	reply, err := c.conn().RequestMsgWithContext(ctx, &nats.Msg{Subject: sendPrefix + id, Header: msgHeader, Data: data})
	if err != nil {
		return err
	}
	_, err = replyData(reply)
	return err
}

func (c *natsClient) call(ctx context.Context, id string, data []byte) ([]byte, error) {
	reply, err := c.conn().RequestMsgWithContext(ctx, &nats.Msg{Subject: callPrefix + id, Header: msgHeader, Data: data})
	if err != nil {
		return nil, err
	}
	return replyData(reply)
}

func (c *natsClient) close() {
	for _, nc := range c.conns {
		nc.Close()
	}
}

// libClient sends with package client.
type libClient struct {
	c   *client.Client
	nc  *nats.Conn
	reg *prometheus.Registry
}

// clientWrites sets res's writes to those of c, when c writes them itself.
func clientWrites(c ingressClient, res Result) Result {
	if lc, ok := c.(*libClient); ok {
		res.MessagesPerWrite, res.WriteMillis = lc.writes()
	}
	return res
}

// writes returns the client's messages per write and the mean time of a
// write, in milliseconds.
func (c *libClient) writes() (msgs, millis float64) {
	mfs, err := c.reg.Gather()
	if err != nil {
		return 0, 0
	}
	var n, sum, secs float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "twinflow_frontdoor_write_messages":
				n, sum = float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()
			case "twinflow_frontdoor_write_seconds":
				secs = m.GetHistogram().GetSampleSum()
			}
		}
	}
	if n == 0 {
		return 0, 0
	}
	return sum / n, 1000 * secs / n
}

func target(id string) router.Address { return router.Address{Type: workload.FunctionType, ID: id} }

func (c *libClient) send(ctx context.Context, id string, data []byte) error {
	_, err := c.c.Send(ctx, target(id), workload.Typename, data)
	return err
}

func (c *libClient) call(ctx context.Context, id string, data []byte) ([]byte, error) {
	_, reply, err := c.c.Call(ctx, target(id), workload.Typename, data)
	return reply, err
}

func (c *libClient) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.c.Close(ctx)
	c.nc.Close()
}

// replyData returns a reply's payload, or the error it carries.
func replyData(m *nats.Msg) ([]byte, error) {
	if e := m.Header.Get(router.ErrorHeader); e != "" {
		return nil, fmt.Errorf("%s (%s)", e, m.Header.Get(router.ErrorReasonHeader))
	}
	return m.Data, nil
}

// httpClient posts to the front door.
type httpClient struct {
	url, token string
	http       *http.Client
}

func (c *httpClient) post(ctx context.Context, kind, id string, data []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+"/"+kind+"/"+workload.FunctionType+"/"+id, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", c.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(router.TypenameHeader, workload.Typename)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

func (c *httpClient) send(ctx context.Context, id string, data []byte) error {
	_, err := c.post(ctx, "send", id, data)
	return err
}

func (c *httpClient) call(ctx context.Context, id string, data []byte) ([]byte, error) {
	return c.post(ctx, "call", id, data)
}

func (c *httpClient) close() { c.http.CloseIdleConnections() }

// oneWay is W1: producers send one-way keyed messages, each waiting for
// the acknowledgement of its message before the next, until the plan's
// messages are all acknowledged; then until they are all applied.
func (d *driver) oneWay(ctx context.Context, mode Mode, path string) (res Result) {
	o := d.o
	res = Result{Scenario: "w1", Mode: mode.Name, Path: path, Addresses: o.Keys, Messages: o.W1Messages, Clients: o.W1Producers}
	plan := workload.Plan{Addresses: o.Keys, Messages: o.W1Messages, Seed: o.Seed}
	v, c, err := d.startWorkload(ctx, mode, path)
	if err != nil {
		return res.fail(err)
	}
	defer v.close()
	defer c.close()
	d.progress("w1/%s/%s: %d producers, %d messages over %d keys", mode.Name, path, o.W1Producers, o.W1Messages, o.Keys)
	stop := d.profile(fmt.Sprintf("w1-%s-%s", mode.Name, path))
	defer stop()
	var acks workload.Histogram
	var next atomic.Int64
	var failed atomic.Pointer[error]
	start, cpu := time.Now(), d.cpuMark()
	var wg sync.WaitGroup
	for range o.W1Producers {
		wg.Go(func() {
			buf := make([]byte, 0, o.PayloadSize)
			for failed.Load() == nil && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= o.W1Messages {
					return
				}
				data, target := plan.Encode(buf[:0], i, o.PayloadSize)
				t := time.Now()
				if err := retryUnavailable(ctx, func(ctx context.Context) error { return c.send(ctx, workload.ID(target), data) }); err != nil {
					err = fmt.Errorf("message %d: %w", i, err)
					failed.CompareAndSwap(nil, &err)
					return
				}
				acks.Record(time.Since(t))
			}
		})
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		return res.fail(*p)
	}
	acked := time.Since(start)
	if err := v.waitInvocations(ctx, float64(o.W1Messages)); err != nil {
		return res.fail(err)
	}
	el := time.Since(start)
	res.CoresRuntime, res.CoresFunction = d.cores(cpu)
	stop()
	res.Seconds = el.Seconds()
	res.PublishPerSec = float64(o.W1Messages) / acked.Seconds()
	res.MsgsPerSec = float64(o.W1Messages) / el.Seconds()
	res.RoundTrip = latencyOf(acks.Snapshot())
	d.progress("w1/%s/%s: acknowledged %.0f msgs/s, applied %.0f msgs/s, ack p99 %.1fms", mode.Name, path, res.PublishPerSec, res.MsgsPerSec, res.RoundTrip.P99)
	counts, _, _ := plan.Expected(o.W1Messages)
	return clientWrites(c, d.finish(ctx, v, res, counts))
}

// requestResponse is W2 (many closed-loop clients over many keys) and W3
// (one client, one key): each client sends a request and waits for the
// reply before the next, for the duration after a warm-up; the round trip
// is measured.
func (d *driver) requestResponse(ctx context.Context, mode Mode, path, scenario string, clients, keys int) (res Result) {
	o := d.o
	res = Result{Scenario: scenario, Mode: mode.Name, Path: path, Addresses: keys, Clients: clients}
	plan := workload.Plan{Addresses: keys, Seed: o.Seed}
	v, c, err := d.startWorkload(ctx, mode, path)
	if err != nil {
		return res.fail(err)
	}
	defer v.close()
	defer c.close()
	d.progress("%s/%s/%s: %d closed-loop clients over %d keys for %s", scenario, mode.Name, path, clients, keys, o.WDuration)
	var rtt workload.Histogram
	var measuring atomic.Bool
	var next, measured atomic.Int64
	var failed atomic.Pointer[error]
	counts := make([]atomic.Int32, keys)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			buf := make([]byte, 0, o.PayloadSize)
			for runCtx.Err() == nil {
				i := int(next.Add(1) - 1)
				data, target := plan.Encode(buf[:0], i, o.PayloadSize)
				t := time.Now()
				var reply []byte
				err := retryUnavailable(runCtx, func(ctx context.Context) (err error) {
					reply, err = c.call(ctx, workload.ID(target), data)
					return err
				})
				if err == nil {
					_, err = strconv.ParseInt(string(reply), 10, 64)
				}
				if err != nil {
					if runCtx.Err() != nil {
						return // the run ended while this request was under way
					}
					err = fmt.Errorf("request %d: %w", i, err)
					failed.CompareAndSwap(nil, &err)
					cancel()
					return
				}
				counts[target].Add(1)
				if measuring.Load() {
					rtt.Record(time.Since(t))
					measured.Add(1)
				}
			}
		})
	}
	const warmup = 2 * time.Second
	select {
	case <-time.After(warmup):
	case <-runCtx.Done():
	}
	stop := d.profile(fmt.Sprintf("%s-%s-%s", scenario, mode.Name, path))
	measuring.Store(true)
	cpu := d.cpuMark()
	select {
	case <-time.After(o.WDuration):
	case <-runCtx.Done():
	}
	measuring.Store(false)
	res.CoresRuntime, res.CoresFunction = d.cores(cpu)
	stop()
	n := measured.Load()
	cancel()
	wg.Wait()
	if p := failed.Load(); p != nil {
		return res.fail(*p)
	}
	res.Seconds = o.WDuration.Seconds()
	res.MsgsPerSec = float64(n) / o.WDuration.Seconds()
	res.RoundTrip = latencyOf(rtt.Snapshot())
	want := make([]int32, keys)
	total := 0
	for k := range counts {
		want[k] = counts[k].Load()
		total += int(want[k])
	}
	res.Messages = total
	// Requests the run ended during may be stored and applied without
	// their replies having been waited for: wait for what was answered,
	// then check no address has fewer.
	if err := v.waitAtLeast(ctx, float64(total)); err != nil {
		return res.fail(err)
	}
	d.progress("%s/%s/%s: %.0f requests/s, p50 %.2fms p99 %.2fms", scenario, mode.Name, path, res.MsgsPerSec, res.RoundTrip.P50, res.RoundTrip.P99)
	v.atLeast = true
	return clientWrites(c, d.finish(ctx, v, res, want))
}

// startWorkload starts an engine for a workload and a client on path.
func (d *driver) startWorkload(ctx context.Context, mode Mode, path string) (*env, ingressClient, error) {
	dir, err := os.MkdirTemp("", "twinflow-bench")
	if err != nil {
		return nil, nil, err
	}
	v, err := d.startEngine(ctx, dir, mode)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	c, err := v.client(path)
	if err != nil {
		v.close()
		return nil, nil, err
	}
	return v, c, nil
}

// retryUnavailable runs f until it succeeds, fails for another reason than
// the front door being unavailable (intake paused: it answers so rather
// than queue without bound), or ctx ends. Every attempt gets 30 seconds.
func retryUnavailable(ctx context.Context, f func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := f(actx)
		cancel()
		if err == nil || !isUnavailable(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func isUnavailable(err error) bool {
	s := err.Error()
	return strings.Contains(s, string(router.ReasonUnavailable)) || strings.Contains(s, "503")
}
