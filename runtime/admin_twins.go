package runtime

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/shard"
	"github.com/twinflow/twinflow/runtime/state"
	"github.com/twinflow/twinflow/runtime/typedjson"
)

// Bounds of the twin queries.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
	// timersScanned bounds the delayed messages of a key group that
	// DescribeAddress looks through for an address's own.
	timersScanned      = 10_000
	defaultSendTimeout = 10 * time.Second
	maxSendTimeout     = time.Minute
)

// ListAddresses lists a page of the addresses of a function type from each
// shard's address index, on the shards' loops (so uncommitted writes
// count), and merges the shards' pages. In cluster mode it merges the
// pages of every worker (clusterMode.listEverywhere).
func (a *adminService) ListAddresses(ctx context.Context, req *connect.Request[twinflowv1.ListAddressesRequest]) (*connect.Response[twinflowv1.ListAddressesResponse], error) {
	var (
		resp *twinflowv1.ListAddressesResponse
		err  error
	)
	if a.e.cl != nil {
		resp, err = a.e.cl.listEverywhere(ctx, req.Msg)
	} else {
		resp, err = a.e.listLocal(ctx, req.Msg)
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// listLocal lists a page of the addresses this process holds. It checks
// the request: cluster mode lists here first, and other workers' requests
// arrive here.
func (e *Engine) listLocal(ctx context.Context, m *twinflowv1.ListAddressesRequest) (*twinflowv1.ListAddressesResponse, error) {
	if err := router.ValidateFunctionType(m.GetType()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	limit, err := listLimit(m.GetLimit())
	if err != nil {
		return nil, err
	}
	pl := e.pl()
	type part struct {
		ids   []string
		total int64
		err   error
	}
	parts := make([]part, len(pl.loops))
	var wg sync.WaitGroup
	for i, l := range pl.loops {
		wg.Go(func() {
			p := &parts[i]
			err := l.Do(ctx, func(*shard.Core) {
				// One more than asked says whether a next page exists.
				p.ids, p.err = pl.layers[i].ListAddresses(pl.ranges[i], m.GetType(), m.GetPrefix(), m.GetAfter(), limit+1)
				if p.err == nil {
					p.total, p.err = pl.layers[i].CountAddresses(pl.ranges[i], m.GetType())
				}
			})
			p.err = cmp.Or(err, p.err)
		})
	}
	wg.Wait()
	resp := &twinflowv1.ListAddressesResponse{}
	var ids []string
	for i, p := range parts {
		if p.err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("listing %s on shard %d: %w", m.GetType(), i, p.err))
		}
		ids = append(ids, p.ids...)
		resp.Total += p.total
	}
	slices.Sort(ids)
	if len(ids) > limit {
		ids = ids[:limit]
		resp.NextAfter = ids[limit-1]
	}
	for _, id := range ids {
		resp.Addresses = append(resp.Addresses, &twinflowv1.AddressEntry{Id: id})
	}
	if len(m.GetStateNames()) > 0 {
		if err := e.addStates(ctx, m.GetType(), resp.Addresses, m.GetStateNames()); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// listLimit checks a listing's page size, 0 meaning the default.
func listLimit(n int32) (int, error) {
	limit := int(n)
	switch {
	case limit < 0:
		return 0, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("limit %d is negative", limit))
	case limit == 0:
		return defaultListLimit, nil
	case limit > maxListLimit:
		return 0, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("limit %d is above the maximum of %d: page through with after", limit, maxListLimit))
	}
	return limit, nil
}

// mergePages merges pages of listings of disjoint sets of addresses into
// the first limit addresses of their union.
func mergePages(pages []*twinflowv1.ListAddressesResponse, limit int) *twinflowv1.ListAddressesResponse {
	out := &twinflowv1.ListAddressesResponse{}
	more := false
	for _, p := range pages {
		out.Addresses = append(out.Addresses, p.GetAddresses()...)
		out.Total += p.GetTotal()
		more = more || p.GetNextAfter() != ""
	}
	slices.SortFunc(out.Addresses, func(a, b *twinflowv1.AddressEntry) int { return cmp.Compare(a.GetId(), b.GetId()) })
	// A worker's first pipeline may still hold key groups another owns.
	out.Addresses = slices.CompactFunc(out.Addresses, func(a, b *twinflowv1.AddressEntry) bool { return a.GetId() == b.GetId() })
	if len(out.Addresses) > limit {
		out.Addresses, more = out.Addresses[:limit], true
	}
	if more && len(out.Addresses) > 0 {
		out.NextAfter = out.Addresses[len(out.Addresses)-1].GetId()
	}
	return out
}

// addStates reads the named values of each address of a page, each on the
// loop of its shard.
func (e *Engine) addStates(ctx context.Context, functionType string, entries []*twinflowv1.AddressEntry, names []string) error {
	pl := e.pl()
	byShard := make([][]*twinflowv1.AddressEntry, len(pl.loops))
	for _, en := range entries {
		s := keygroup.ShardOf(keygroup.Of(en.GetId(), e.cfg.KeyGroups), e.cfg.KeyGroups, e.cfg.Shards)
		byShard[s] = append(byShard[s], en)
	}
	errs := make([]error, len(pl.loops))
	var wg sync.WaitGroup
	for s, group := range byShard {
		if len(group) == 0 {
			continue
		}
		wg.Go(func() {
			err := pl.loops[s].Do(ctx, func(c *shard.Core) {
				for _, en := range group {
					vals, err := c.GetState(shard.Address{Type: functionType, ID: en.GetId()})
					if err != nil {
						errs[s] = fmt.Errorf("reading state of %s/%s: %w", functionType, en.GetId(), err)
						return
					}
					en.Values = stateEntries(e.json, vals, names)
				}
			})
			errs[s] = cmp.Or(err, errs[s])
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	return nil
}

// stateEntries converts state values for the API, in name order; only
// those in names unless names is empty.
func stateEntries(codec *typedjson.Codec, vals map[string]state.Value, names []string) []*twinflowv1.StateEntry {
	var out []*twinflowv1.StateEntry
	for name, v := range vals {
		if len(names) > 0 && !slices.Contains(names, name) {
			continue
		}
		en := &twinflowv1.StateEntry{
			Name:                name,
			Value:               &twinflowv1.TypedValue{Typename: v.Typename, Value: v.Data},
			ExpiresAtUnixMillis: v.ExpiresAtMillis,
		}
		en.Json, _ = codec.Render(v.Typename, v.Data)
		out = append(out, en)
	}
	slices.SortFunc(out, func(x, y *twinflowv1.StateEntry) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// DescribeAddress reads an address's state, pending delayed messages and
// recent activity on the loop of the shard that owns it.
func (a *adminService) DescribeAddress(ctx context.Context, req *connect.Request[twinflowv1.DescribeAddressRequest]) (*connect.Response[twinflowv1.DescribeAddressResponse], error) {
	addr := req.Msg.GetAddress()
	if err := router.ValidateAddress(addr.GetType(), addr.GetId()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	e := a.e
	pl := e.pl()
	kg := keygroup.Of(addr.GetId(), e.cfg.KeyGroups)
	s := keygroup.ShardOf(kg, e.cfg.KeyGroups, e.cfg.Shards)
	resp := &twinflowv1.DescribeAddressResponse{Address: addr, KeyGroup: int32(kg), Shard: int32(s)}
	var rerr error
	err := pl.loops[s].Do(ctx, func(c *shard.Core) {
		at := shard.Address{Type: addr.GetType(), ID: addr.GetId()}
		vals, err := c.GetState(at)
		if err != nil {
			rerr = err
			return
		}
		resp.Values = stateEntries(a.e.json, vals, nil)
		timers, truncated, err := state.TimersOf(pl.layers[s].View(), kg, state.Address(at), timersScanned)
		if err != nil {
			rerr = err
			return
		}
		resp.DelayedTruncated = truncated
		for _, t := range timers {
			d := &twinflowv1.DelayedInfo{Target: t.GetTarget(), Argument: t.GetArgument(), DueUnixMillis: t.GetDueUnixMillis(), CancellationToken: t.GetToken()}
			d.Json, _ = a.e.json.Render(t.GetArgument().GetTypename(), t.GetArgument().GetValue())
			resp.Delayed = append(resp.Delayed, d)
		}
		act, ok := c.Activity(at)
		resp.ActivityKnown = ok
		resp.Received = activityEntries(a.e.json, act.Received)
		resp.Sent = activityEntries(a.e.json, act.Sent)
	})
	if err = cmp.Or(err, rerr); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("describing %s/%s: %w", addr.GetType(), addr.GetId(), err))
	}
	return connect.NewResponse(resp), nil
}

func activityEntries(codec *typedjson.Codec, es []shard.ActivityEntry) []*twinflowv1.ActivityEntry {
	out := make([]*twinflowv1.ActivityEntry, 0, len(es))
	for _, e := range es {
		x := &twinflowv1.ActivityEntry{
			AtUnixMillis: e.At.UnixMilli(), Kind: e.Kind.String(), Egress: e.Egress, Typename: e.Typename,
			Size: int64(e.Size), Preview: e.Preview, Note: e.Note,
		}
		if e.Peer.Type != "" {
			x.Peer = &twinflowv1.Address{Type: e.Peer.Type, Id: e.Peer.ID}
		}
		if len(e.Preview) == e.Size {
			x.Json, _ = codec.Render(e.Typename, e.Preview)
		}
		out = append(out, x)
	}
	return out
}

// adminInboxPrefix is the prefix of the inboxes the admin API's requests
// are answered on: the runtime identity's own, which only the runtime may
// read on the embedded server, and which an ingress accepts as a reply
// subject.
var adminInboxPrefix = InboxPrefix(secrets.Runtime) + "."

// SendMessage publishes a message to an address through the direct
// ingress, as twinflow send and request do, with the runtime's connection.
func (a *adminService) SendMessage(ctx context.Context, req *connect.Request[twinflowv1.SendMessageRequest]) (*connect.Response[twinflowv1.SendMessageResponse], error) {
	m := req.Msg
	addr := m.GetAddress()
	if err := router.ValidateAddress(addr.GetType(), addr.GetId()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	typename := cmp.Or(m.GetTypename(), "twinflow/json")
	if err := router.ValidateTypename(typename); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	payload := m.GetPayload()
	if m.GetJson() != "" {
		if len(payload) > 0 {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("give the payload as bytes or as JSON, not both"))
		}
		var err error
		if payload, err = a.e.json.Encode(typename, m.GetJson()); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		}
	}
	if len(payload) > a.e.cfg.MaxPayload {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("the payload of %d bytes exceeds the maximum of %d", len(payload), a.e.cfg.MaxPayload))
	}
	timeout := time.Duration(m.GetTimeoutMillis()) * time.Millisecond
	if timeout <= 0 {
		timeout = defaultSendTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, min(timeout, maxSendTimeout))
	defer cancel()
	subject, err := router.DirectSubject(addr.GetType(), addr.GetId())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	msg := &nats.Msg{Subject: subject, Header: nats.Header{}, Data: payload}
	msg.Header.Set(router.TypenameHeader, typename)
	var sub *nats.Subscription
	if m.GetRequest() {
		inbox := adminInboxPrefix + strings.TrimPrefix(nats.NewInbox(), "_INBOX.")
		if sub, err = a.e.nc.SubscribeSync(inbox); err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("reply inbox: %w", err))
		}
		defer func() { _ = sub.Unsubscribe() }()
		msg.Header.Set(router.ReplyToHeader, inbox)
	}
	ack, err := a.e.js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("publishing to %s: %w", subject, err))
	}
	resp := &twinflowv1.SendMessageResponse{Sequence: ack.Sequence}
	if sub != nil {
		reply, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("published as sequence %d, but no reply came within %s: %w", ack.Sequence, timeout, err))
		}
		resp.ReplyError = reply.Header.Get(router.ErrorHeader)
		if resp.ReplyError == "" {
			tn := reply.Header.Get(router.TypenameHeader)
			resp.Reply = &twinflowv1.TypedValue{Typename: tn, Value: reply.Data}
			resp.ReplyJson, _ = a.e.json.Render(tn, reply.Data)
		}
	}
	return connect.NewResponse(resp), nil
}
