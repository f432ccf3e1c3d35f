package runtime

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/runtime/natsbus"
)

// publisher sends egress records and dead letters to NATS.
type publisher struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	bus *natsbus.Publisher
	log *slog.Logger

	once  sync.Once
	async chan []*storagev1.EgressRecord
}

func newPublisher(nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) *publisher {
	return &publisher{nc: nc, js: js, bus: natsbus.NewPublisher(js, natsbus.PublisherOptions{Logger: log}), log: log, async: make(chan []*storagev1.EgressRecord, 1024)}
}

// Publish stores records in JetStream and waits for every acknowledgement.
// Records with a message id are deduplicated by JetStream, which makes a
// repeat after a crash harmless.
func (p *publisher) Publish(ctx context.Context, recs []*storagev1.EgressRecord) error {
	out := make([]natsbus.Record, len(recs))
	for i, r := range recs {
		h := make(nats.Header, len(r.GetHeaders()))
		for k, v := range r.GetHeaders() {
			h.Set(k, v)
		}
		out[i] = natsbus.Record{Subject: r.GetSubject(), Header: h, Data: r.GetData(), MsgID: r.GetMsgId()}
	}
	return p.bus.Publish(ctx, out)
}

// PublishAsync publishes at-least-once records in the background, in
// order, retrying until they are stored.
func (p *publisher) PublishAsync(recs []*storagev1.EgressRecord) {
	p.once.Do(func() { go p.drain() })
	p.async <- recs
}

func (p *publisher) drain() {
	for recs := range p.async {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := p.Publish(ctx, recs)
			cancel()
			if err == nil || p.nc.IsClosed() {
				break
			}
			p.log.Error("publishing at-least-once egress failed; retrying", "records", len(recs), "err", err)
			time.Sleep(time.Second)
		}
	}
}

// Reply answers a request on core NATS: reply subjects are inboxes that no
// stream captures. A reply is lost if the requester has gone, as with any
// NATS request.
func (p *publisher) Reply(rec *storagev1.EgressRecord) {
	msg := nats.NewMsg(rec.GetSubject())
	for k, v := range rec.GetHeaders() {
		msg.Header.Set(k, v)
	}
	msg.Data = rec.GetData()
	if err := p.nc.PublishMsg(msg); err != nil {
		p.log.Warn("publishing reply failed", "subject", rec.GetSubject(), "err", err)
	}
}
