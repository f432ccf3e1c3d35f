package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/internal/bench/workload"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/natsbus"
)

// maxPending bounds the publishes awaiting their acknowledgement.
const maxPending = 4096

// pubConn is a publisher's connection: async JetStream publishes, with
// failures counted.
type pubConn struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs atomic.Int64
}

// dialPublisher connects with creds (an nkey seed file) and inbox prefix,
// when given.
func dialPublisher(url, creds, inboxPrefix string, log *slog.Logger) (*pubConn, error) {
	opts := []nats.Option{nats.Name("twinflow-bench")}
	if creds != "" {
		auth, err := nats.NkeyOptionFromSeed(creds)
		if err != nil {
			return nil, err
		}
		opts = append(opts, auth)
	}
	if inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(inboxPrefix))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, err
	}
	p := &pubConn{nc: nc}
	p.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			if p.errs.Add(1) == 1 {
				log.Error("publish failed", "subject", m.Subject, "err", err)
			}
		}))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return p, nil
}

var (
	subjectPrefix = router.DirectSubjectPrefix + strings.ReplaceAll(workload.FunctionType, "/", ".") + "."
	msgHeader     = nats.Header{router.TypenameHeader: {workload.Typename}}
)

// publish publishes message i of plan to the direct ingress without
// waiting for its acknowledgement; with stamp, the payload carries the
// time of the call.
func (p *pubConn) publish(plan workload.Plan, i, size int, stamp bool) error {
	data, target := plan.Encode(make([]byte, 0, size), i, size)
	if stamp {
		workload.Stamp(data, time.Now().UnixNano())
	}
	msg := &nats.Msg{Subject: subjectPrefix + workload.ID(target), Header: msgHeader, Data: data}
	for {
		_, err := p.js.PublishMsgAsync(msg)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return err
		}
	}
}

// complete waits until every publish is acknowledged, and fails if any
// failed.
func (p *pubConn) complete(ctx context.Context) error {
	select {
	case <-p.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("%d publishes not acknowledged after 2 minutes", p.js.PublishAsyncPending())
	}
	if n := p.errs.Load(); n > 0 {
		return fmt.Errorf("%d publishes failed", n)
	}
	return nil
}

// publishFor publishes messages from, from+1, ... of plan for d, at rate
// messages per second, or as fast as they are acknowledged when rate is 0,
// and returns how many it published.
func (p *pubConn) publishFor(ctx context.Context, plan workload.Plan, from int, d time.Duration, rate float64, size int, stamp bool) (int, error) {
	start := time.Now()
	i := from
	for ctx.Err() == nil {
		el := time.Since(start)
		if el >= d {
			break
		}
		n := 256
		if rate > 0 {
			n = from + int(rate*el.Seconds()) - i
			if n <= 0 {
				time.Sleep(time.Millisecond)
				continue
			}
		}
		for range n {
			if err := p.publish(plan, i, size, stamp); err != nil {
				return i - from, err
			}
			i++
		}
	}
	return i - from, ctx.Err()
}

// prefill publishes messages [0, n) of plan into the direct-ingress stream
// of the data dir, through an embedded server of its own that is stopped
// before the engine starts on the same store. It always uses the periodic
// fsync: the mode under test is the engine's.
func (d *driver) prefill(ctx context.Context, dir string, plan workload.Plan, n int) error {
	srv, err := natsbus.StartServer(natsbus.ServerOptions{
		Dir: filepath.Join(dir, "nats"), Port: -1, NoAuth: true, SyncInterval: 2 * time.Minute,
		Logger: d.log.With("component", "prefill"),
	})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	p, err := dialPublisher(srv.ClientURL(), "", "", d.log)
	if err != nil {
		return err
	}
	defer p.nc.Close()
	s, err := natsbus.EnsureStream(ctx, p.js, directStream)
	if err != nil {
		return err
	}
	for i := range n {
		if i%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if err := p.publish(plan, i, d.o.PayloadSize, false); err != nil {
			return err
		}
	}
	if err := p.complete(ctx); err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs != uint64(n) {
		return fmt.Errorf("stream holds %d messages after publishing %d", info.State.Msgs, n)
	}
	return nil
}
