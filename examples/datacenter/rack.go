package datacenter

import (
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/sdk"
)

// CorrelationModel holds the rules that turn the incidents of a rack's
// servers into one rack incident, tried in this order:
//
//   - TOR_SWITCH_FAILURE: at least Share of the rack's known servers, and
//     at least MinServers of them, have PACKET_LOSS. The top-of-rack switch
//     is the one network part they all share.
//   - POWER_DEGRADATION: the same with POWER_DEGRADED. The rack's power
//     distribution is the one power part they all share.
//   - MULTIPLE_SERVER_FAILURES: at least MultipleFailures servers have some
//     incident, with no common cause found above. Someone should look at
//     the rack as a whole.
//
// One server with packet loss is that server's problem, not the switch's:
// MinServers keeps a rack of one or two servers from blaming its switch.
type CorrelationModel struct {
	// Share is the fraction (0–1] of the rack's known servers that must
	// show the same incident. Default 0.5.
	Share float64
	// MinServers is the fewest servers a shared cause needs. Default 2.
	MinServers int
	// MultipleFailures is how many servers with any incident make the rack
	// suspect. Default 3.
	MultipleFailures int
}

// DefaultCorrelationModel returns the default rules.
func DefaultCorrelationModel() CorrelationModel {
	return CorrelationModel{Share: 0.5, MinServers: 2, MultipleFailures: 3}
}

func (m CorrelationModel) withDefaults() CorrelationModel {
	d := DefaultCorrelationModel()
	if m.Share == 0 {
		m.Share = d.Share
	}
	if m.MinServers == 0 {
		m.MinServers = d.MinServers
	}
	if m.MultipleFailures == 0 {
		m.MultipleFailures = d.MultipleFailures
	}
	return m
}

func (m CorrelationModel) validate() error {
	switch {
	case m.Share <= 0 || m.Share > 1:
		return fmt.Errorf("Share %v: want a fraction in (0, 1]", m.Share)
	case m.MinServers < 1:
		return fmt.Errorf("MinServers %d: want at least 1", m.MinServers)
	case m.MultipleFailures < 1:
		return fmt.Errorf("MultipleFailures %d: want at least 1", m.MultipleFailures)
	}
	return nil
}

// Correlation is a rack incident found by a [CorrelationModel].
type Correlation struct {
	Kind RackKind
	// Servers are the servers it explains, sorted.
	Servers []string
	// Reason says why, in words.
	Reason string
}

// Correlate applies the rules to the open incidents of each known server
// of a rack (a server with none is healthy but counts as known) and
// returns the rack incident, or false when there is none. The zero fields
// of m select the defaults.
func (m CorrelationModel) Correlate(servers map[string][]Kind) (Correlation, bool) {
	m = m.withDefaults()
	known := len(servers)
	shared := func(k Kind, rk RackKind, cause string) (Correlation, bool) {
		var with []string
		for id, kinds := range servers {
			if slices.Contains(kinds, k) {
				with = append(with, id)
			}
		}
		if len(with) < m.MinServers || float64(len(with)) < m.Share*float64(known) {
			return Correlation{}, false
		}
		slices.Sort(with)
		return Correlation{Kind: rk, Servers: with, Reason: fmt.Sprintf(
			"%d of %d servers have %s: %s", len(with), known, k, cause)}, true
	}
	if c, ok := shared(PacketLoss, TORSwitchFailure, "the top-of-rack switch is their common network path"); ok {
		return c, true
	}
	if c, ok := shared(PowerDegraded, PowerDegradation, "the rack's power distribution is their common supply"); ok {
		return c, true
	}
	var failing []string
	for id, kinds := range servers {
		if len(kinds) > 0 {
			failing = append(failing, id)
		}
	}
	if len(failing) >= m.MultipleFailures {
		slices.Sort(failing)
		return Correlation{Kind: MultipleServerFailures, Servers: failing, Reason: fmt.Sprintf(
			"%d of %d servers have open incidents with no common cause found", len(failing), known)}, true
	}
	return Correlation{}, false
}

// RackState is what a rack twin keeps: its servers' open incidents, the
// histogram of them, and the rack incident it reported last.
type RackState struct {
	// Servers maps each known server to its open incident kinds, sorted;
	// empty for a healthy server.
	Servers map[string][]Kind `json:"servers"`
	// Histogram counts the servers with each kind of incident open.
	Histogram map[Kind]int `json:"histogram,omitempty"`
	// Alert is the open rack incident as last reported, nil when there is
	// none.
	Alert *RackAlertRecord `json:"alert,omitempty"`
	// LastChangeAt is the time of the newest change of the servers'
	// incidents; rack alerts carry it.
	LastChangeAt time.Time `json:"lastChangeAt,omitzero"`
	// CheckPending is true while a CorrelationCheck is on its way.
	CheckPending bool `json:"checkPending,omitempty"`
}

// RackAlertRecord is a rack incident as kept in state: the JSON form of a
// [datacenterv1.RackAlert].
type RackAlertRecord struct {
	RackID       string    `json:"rackId"`
	Kind         RackKind  `json:"kind"`
	Servers      []string  `json:"servers"`
	Reason       string    `json:"reason"`
	KnownServers int       `json:"knownServers"`
	OpenedAt     time.Time `json:"openedAt"`
	UpdatedAt    time.Time `json:"updatedAt"`
}

// Proto returns the alert as a message.
func (r RackAlertRecord) Proto() *datacenterv1.RackAlert {
	return &datacenterv1.RackAlert{
		RackId:       r.RackID,
		Kind:         r.Kind.Proto(),
		ServerIds:    slices.Clone(r.Servers),
		Reason:       r.Reason,
		KnownServers: int32(r.KnownServers),
		OpenedAt:     timestamppb.New(r.OpenedAt),
		UpdatedAt:    timestamppb.New(r.UpdatedAt),
	}
}

// RackAlertRecordOf returns the record of a message.
func RackAlertRecordOf(a *datacenterv1.RackAlert) RackAlertRecord {
	return RackAlertRecord{
		RackID:       a.GetRackId(),
		Kind:         RackKindOf(a.GetKind()),
		Servers:      slices.Clone(a.GetServerIds()),
		Reason:       a.GetReason(),
		KnownServers: int(a.GetKnownServers()),
		OpenedAt:     a.GetOpenedAt().AsTime(),
		UpdatedAt:    a.GetUpdatedAt().AsTime(),
	}
}

// RackStateSpec is the state of a rack twin. It does not expire: servers
// tell their rack when they leave, and a rack with no servers left clears
// it.
var RackStateSpec = sdk.ValueSpec[RackState]{
	Name: "rack",
	Type: sdk.JSONType[RackState]("datacenter/RackState"),
}

// rackFun is the twin of one rack: it collects the open incidents of its
// servers, correlates them, and reports the rack incident to the data
// center when it appears, changes or clears.
type rackFun struct {
	cfg Config
}

// CorrelationToken is the cancellation token of a rack twin's correlation
// check. There is at most one pending: changes while it is pending join it.
const CorrelationToken = "correlate"

// Invoke dispatches on the message type.
func (f *rackFun) Invoke(ctx sdk.Context, msg sdk.Message) error {
	st, _, err := RackStateSpec.Get(ctx)
	if err != nil {
		return err
	}
	var at time.Time
	switch msg.Typename() {
	case ServerIncidentsType.Typename():
		m, err := sdk.As(msg, ServerIncidentsType)
		if err != nil {
			return sdk.Terminal(err)
		}
		if m.GetServerId() == "" {
			return sdk.Terminal(fmt.Errorf("incidents for rack %s name no server", ctx.Self().ID))
		}
		kinds := make([]Kind, 0, len(m.GetOpen()))
		for _, k := range m.GetOpen() {
			kinds = append(kinds, KindOf(k))
		}
		slices.Sort(kinds)
		if st.Servers == nil {
			st.Servers = make(map[string][]Kind)
		}
		st.Servers[m.GetServerId()] = slices.Compact(kinds)
		at = m.GetChangedAt().AsTime()
	case ServerDecommissionedType.Typename():
		m, err := sdk.As(msg, ServerDecommissionedType)
		if err != nil {
			return sdk.Terminal(err)
		}
		delete(st.Servers, m.GetServerId())
		at = m.GetLeftAt().AsTime()
	case CorrelationCheckType.Typename():
		st.CheckPending = false
		if err := f.correlate(ctx, &st); err != nil {
			return err
		}
		return f.save(ctx, st)
	default:
		return sdk.Terminal(fmt.Errorf("%s does not handle messages of type %s", RackFunction, msg.Typename()))
	}
	st.Histogram = histogram(st.Servers)
	if at.After(st.LastChangeAt) {
		st.LastChangeAt = at
	}
	switch {
	case f.cfg.CorrelationDelay <= 0:
		if err := f.correlate(ctx, &st); err != nil {
			return err
		}
	case !st.CheckPending:
		// The first change arms the check; later ones join it rather
		// than postpone it, so a flapping server cannot hold the rack's
		// report back.
		err := sdk.SendAfter(ctx, f.cfg.CorrelationDelay, ctx.Self(), CorrelationCheckType, &datacenterv1.CorrelationCheck{}, CorrelationToken)
		if err != nil {
			return err
		}
		st.CheckPending = true
	}
	return f.save(ctx, st)
}

// save writes the state, or clears it when the rack has nothing left to
// remember.
func (f *rackFun) save(ctx sdk.Context, st RackState) error {
	if len(st.Servers) == 0 && st.Alert == nil && !st.CheckPending {
		RackStateSpec.Clear(ctx)
		return nil
	}
	return RackStateSpec.Set(ctx, st)
}

// correlate applies the correlation model and reports the outcome.
func (f *rackFun) correlate(ctx sdk.Context, st *RackState) error {
	c, found := f.cfg.Correlation.Correlate(st.Servers)
	return f.report(ctx, st, c, found, st.LastChangeAt)
}

// report tells the data center and the alerts egress about a rack incident
// that appeared or changed (another kind, other servers), or that cleared.
func (f *rackFun) report(ctx sdk.Context, st *RackState, c Correlation, found bool, at time.Time) error {
	dc := sdk.Address{Type: DataCenterFunction, ID: f.cfg.DataCenterID}
	prev := st.Alert
	if !found {
		if prev == nil {
			return nil
		}
		st.Alert = nil
		ok := &datacenterv1.RackOk{RackId: ctx.Self().ID, ClearedAt: timestamppb.New(at)}
		if err := sdk.Send(ctx, dc, RackOkType, ok); err != nil {
			return err
		}
		return sdk.Egress(ctx, AlertsEgress, RackOkType, ok)
	}
	if prev != nil && prev.Kind == c.Kind && slices.Equal(prev.Servers, c.Servers) {
		return nil
	}
	rec := RackAlertRecord{
		RackID:       ctx.Self().ID,
		Kind:         c.Kind,
		Servers:      c.Servers,
		Reason:       c.Reason,
		KnownServers: len(st.Servers),
		OpenedAt:     at,
		UpdatedAt:    at,
	}
	if prev != nil && prev.Kind == c.Kind {
		rec.OpenedAt = prev.OpenedAt
	}
	st.Alert = &rec
	a := rec.Proto()
	if err := sdk.Send(ctx, dc, RackAlertType, a); err != nil {
		return err
	}
	return sdk.Egress(ctx, AlertsEgress, RackAlertType, a)
}

// histogram counts the servers with each kind of incident open.
func histogram(servers map[string][]Kind) map[Kind]int {
	h := make(map[Kind]int)
	for _, kinds := range servers {
		for _, k := range kinds {
			h[k]++
		}
	}
	return h
}
