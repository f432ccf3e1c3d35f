package datacenter

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/sdk"
)

// SilenceToken is the cancellation token of a server twin's silence timer.
// Every report re-arms the timer with this token, which replaces the
// pending one, so at most one timer per server is ever pending.
const SilenceToken = "silence"

// ServerHealth is what a server twin knows about its server besides the
// window. It has no expiry: a server that stopped reporting must stay
// flagged until it reports again or is decommissioned.
type ServerHealth struct {
	// RackID is the rack the server sits in.
	RackID string `json:"rackId"`
	// LastReportAt is the time of the newest report, zero before the first.
	LastReportAt time.Time `json:"lastReportAt,omitzero"`
	// Incidents are the open incidents by kind.
	Incidents map[Kind]Incident `json:"incidents,omitempty"`
	// TimerSequence numbers the arming of the silence timer; only the check
	// with the latest number counts.
	TimerSequence uint64 `json:"timerSequence"`
}

// Incident is an open incident of a server.
type Incident struct {
	Reason   string    `json:"reason"`
	OpenedAt time.Time `json:"openedAt"`
}

// openKinds returns the kinds of the open incidents, sorted.
func (h ServerHealth) openKinds() []Kind {
	return slices.Sorted(maps.Keys(h.Incidents))
}

// The state of a server twin.
var (
	// ServerWindowState is the sliding window of the last 15 minutes of
	// reports. It expires 15 minutes after its last write: the window of a
	// server that stopped reporting disappears by itself.
	ServerWindowState = sdk.ValueSpec[Window]{
		Name:        "window",
		Type:        sdk.JSONType[Window]("datacenter/MetricWindow"),
		ExpiryMode:  sdk.ExpireAfterWrite,
		ExpireAfter: WindowLength,
	}
	// ServerHealthState is the server's rack, open incidents and timer.
	ServerHealthState = sdk.ValueSpec[ServerHealth]{
		Name: "health",
		Type: sdk.JSONType[ServerHealth]("datacenter/ServerHealth"),
	}
)

// serverFun is the twin of one server: it keeps the window of reports,
// evaluates the health model on it, alerts when an incident opens or
// resolves, tells its rack the open incidents, and watches for silence.
type serverFun struct {
	cfg Config
}

// Invoke dispatches on the message type.
func (f *serverFun) Invoke(ctx sdk.Context, msg sdk.Message) error {
	switch msg.Typename() {
	case ServerMetricReportType.Typename():
		r, err := sdk.As(msg, ServerMetricReportType)
		if err != nil {
			return sdk.Terminal(err)
		}
		return f.report(ctx, r)
	case SilenceCheckType.Typename():
		c, err := sdk.As(msg, SilenceCheckType)
		if err != nil {
			return sdk.Terminal(err)
		}
		return f.silenceCheck(ctx, c)
	case CommissionServerType.Typename():
		c, err := sdk.As(msg, CommissionServerType)
		if err != nil {
			return sdk.Terminal(err)
		}
		return f.commission(ctx, c)
	case DecommissionServerType.Typename():
		d, err := sdk.As(msg, DecommissionServerType)
		if err != nil {
			return sdk.Terminal(err)
		}
		return f.decommission(ctx, d)
	}
	return sdk.Terminal(fmt.Errorf("%s does not handle messages of type %s", ServerFunction, msg.Typename()))
}

// checkServerID rejects a message about another server than the twin's: it
// was routed by a subject or header that disagrees with its content, and
// only the publisher can fix that.
func checkServerID(ctx sdk.Context, id string) error {
	if id != "" && id != ctx.Self().ID {
		return sdk.Terminal(fmt.Errorf("message about server %q reached the twin of %q", id, ctx.Self().ID))
	}
	return nil
}

func (f *serverFun) report(ctx sdk.Context, r *datacenterv1.ServerMetricReport) error {
	if err := checkServerID(ctx, r.GetServerId()); err != nil {
		return err
	}
	if r.GetReportedAt() == nil {
		return sdk.Terminal(fmt.Errorf("report of server %s has no reported_at", ctx.Self().ID))
	}
	h, known, err := ServerHealthState.Get(ctx)
	if err != nil {
		return err
	}
	rack := r.GetRackId()
	if rack == "" {
		rack = h.RackID
	}
	if rack == "" {
		return sdk.Terminal(fmt.Errorf("report of server %s has no rack_id and the server was not commissioned", ctx.Self().ID))
	}
	// Reports need not follow a CommissionServer: metrics and provisioning
	// are separate ingresses with no order between them, and a server that
	// reports is in service. A report from another rack means the server
	// moved.
	s := SampleOf(r)
	joined, err := f.joinRack(ctx, &h, known, rack, s.At)
	if err != nil {
		return err
	}

	w, _, err := ServerWindowState.Get(ctx)
	if err != nil {
		return err
	}
	w = w.Add(s, f.cfg.WindowSpacing)
	if err := ServerWindowState.Set(ctx, w); err != nil {
		return err
	}
	newest, _ := w.Newest()
	if newest.At.After(h.LastReportAt) {
		h.LastReportAt = newest.At
	}

	// Every report ends a silence, so NO_REPORTS is never among the found
	// incidents and resolves here.
	open := slices.DeleteFunc(h.openKinds(), func(k Kind) bool { return k == NoReports })
	changed, err := f.reconcile(ctx, &h, f.cfg.Health.Assess(w, open...), newest.At)
	if err != nil {
		return err
	}
	if changed || joined {
		if err := f.tellRack(ctx, h, newest.At); err != nil {
			return err
		}
	}
	if err := f.armSilenceTimer(ctx, &h); err != nil {
		return err
	}
	return ServerHealthState.Set(ctx, h)
}

// joinRack records the server's rack and reports whether the rack has to
// learn about the server. A server that moved leaves its old rack first.
func (f *serverFun) joinRack(ctx sdk.Context, h *ServerHealth, known bool, rack string, at time.Time) (bool, error) {
	if known && h.RackID == rack {
		return false, nil
	}
	if known && h.RackID != "" {
		left := &datacenterv1.ServerDecommissioned{ServerId: ctx.Self().ID, RackId: h.RackID, LeftAt: timestamppb.New(at)}
		if err := sdk.Send(ctx, sdk.Address{Type: RackFunction, ID: h.RackID}, ServerDecommissionedType, left); err != nil {
			return false, err
		}
	}
	h.RackID = rack
	return true, nil
}

// reconcile opens the found incidents that are not open yet and resolves
// the open ones that were not found, with an alert for each, at time at.
// It reports whether the set of open incidents changed.
func (f *serverFun) reconcile(ctx sdk.Context, h *ServerHealth, found map[Kind]string, at time.Time) (bool, error) {
	changed := false
	for _, k := range h.openKinds() {
		if _, still := found[k]; still {
			continue
		}
		inc := h.Incidents[k]
		delete(h.Incidents, k)
		changed = true
		if err := f.alert(ctx, h.RackID, k, inc, &at); err != nil {
			return false, err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(found)) {
		if _, open := h.Incidents[k]; open {
			continue
		}
		inc := Incident{Reason: found[k], OpenedAt: at}
		if h.Incidents == nil {
			h.Incidents = make(map[Kind]Incident)
		}
		h.Incidents[k] = inc
		changed = true
		if err := f.alert(ctx, h.RackID, k, inc, nil); err != nil {
			return false, err
		}
	}
	return changed, nil
}

// alert publishes a ServerAlert: open when resolvedAt is nil, else
// resolved.
func (f *serverFun) alert(ctx sdk.Context, rack string, k Kind, inc Incident, resolvedAt *time.Time) error {
	a := &datacenterv1.ServerAlert{
		ServerId: ctx.Self().ID,
		RackId:   rack,
		Kind:     k.Proto(),
		Status:   datacenterv1.AlertStatus_ALERT_STATUS_OPEN,
		Reason:   inc.Reason,
		OpenedAt: timestamppb.New(inc.OpenedAt),
	}
	if resolvedAt != nil {
		a.Status = datacenterv1.AlertStatus_ALERT_STATUS_RESOLVED
		a.ResolvedAt = timestamppb.New(*resolvedAt)
	}
	return sdk.Egress(ctx, AlertsEgress, ServerAlertType, a)
}

// tellRack sends the open incidents to the server's rack.
func (f *serverFun) tellRack(ctx sdk.Context, h ServerHealth, at time.Time) error {
	m := &datacenterv1.ServerIncidents{ServerId: ctx.Self().ID, RackId: h.RackID, ChangedAt: timestamppb.New(at)}
	for _, k := range h.openKinds() {
		m.Open = append(m.Open, k.Proto())
	}
	return sdk.Send(ctx, sdk.Address{Type: RackFunction, ID: h.RackID}, ServerIncidentsType, m)
}

// armSilenceTimer (re)starts the silence timer. The token makes the new
// timer replace the pending one; the sequence number lets a check that was
// already delivered before the replacement be recognized as stale.
func (f *serverFun) armSilenceTimer(ctx sdk.Context, h *ServerHealth) error {
	h.TimerSequence++
	check := &datacenterv1.SilenceCheck{Sequence: h.TimerSequence}
	return sdk.SendAfter(ctx, f.cfg.SilenceTimeout, ctx.Self(), SilenceCheckType, check, SilenceToken)
}

func (f *serverFun) silenceCheck(ctx sdk.Context, c *datacenterv1.SilenceCheck) error {
	h, known, err := ServerHealthState.Get(ctx)
	if err != nil {
		return err
	}
	if !known || c.GetSequence() != h.TimerSequence {
		// Decommissioned, or a report re-armed the timer since.
		return nil
	}
	if _, open := h.Incidents[NoReports]; open {
		return nil
	}
	now := f.cfg.Now()
	reason := fmt.Sprintf("no report for %v since commissioning", f.cfg.SilenceTimeout)
	if !h.LastReportAt.IsZero() {
		reason = fmt.Sprintf("no report for %v; the last one was taken at %s",
			f.cfg.SilenceTimeout, h.LastReportAt.UTC().Format(time.RFC3339))
	}
	inc := Incident{Reason: reason, OpenedAt: now}
	if h.Incidents == nil {
		h.Incidents = make(map[Kind]Incident)
	}
	h.Incidents[NoReports] = inc
	if err := f.alert(ctx, h.RackID, NoReports, inc, nil); err != nil {
		return err
	}
	if err := f.tellRack(ctx, h, now); err != nil {
		return err
	}
	return ServerHealthState.Set(ctx, h)
}

func (f *serverFun) commission(ctx sdk.Context, c *datacenterv1.CommissionServer) error {
	if err := checkServerID(ctx, c.GetServerId()); err != nil {
		return err
	}
	if c.GetRackId() == "" {
		return sdk.Terminal(fmt.Errorf("commissioning of server %s names no rack", ctx.Self().ID))
	}
	h, known, err := ServerHealthState.Get(ctx)
	if err != nil {
		return err
	}
	now := f.cfg.Now()
	joined, err := f.joinRack(ctx, &h, known, c.GetRackId(), now)
	if err != nil || !joined {
		// Commissioning a server in its own rack again changes nothing.
		return err
	}
	if err := f.tellRack(ctx, h, now); err != nil {
		return err
	}
	if !known {
		// A server that never reports after commissioning is as silent
		// as one that stopped.
		if err := f.armSilenceTimer(ctx, &h); err != nil {
			return err
		}
	}
	return ServerHealthState.Set(ctx, h)
}

func (f *serverFun) decommission(ctx sdk.Context, d *datacenterv1.DecommissionServer) error {
	if err := checkServerID(ctx, d.GetServerId()); err != nil {
		return err
	}
	h, known, err := ServerHealthState.Get(ctx)
	if err != nil {
		return err
	}
	// Cancel and clear even when nothing is known: a repeated
	// decommissioning must leave no timer and no window behind either.
	ctx.CancelDelayed(SilenceToken)
	ServerWindowState.Clear(ctx)
	ServerHealthState.Clear(ctx)
	if !known {
		return nil
	}
	now := f.cfg.Now()
	// Close the open incidents, so that whoever tracks alerts sees them end.
	for _, k := range h.openKinds() {
		inc := h.Incidents[k]
		inc.Reason = "server decommissioned; was: " + inc.Reason
		if err := f.alert(ctx, h.RackID, k, inc, &now); err != nil {
			return err
		}
	}
	left := &datacenterv1.ServerDecommissioned{ServerId: ctx.Self().ID, RackId: h.RackID, LeftAt: timestamppb.New(now)}
	return sdk.Send(ctx, sdk.Address{Type: RackFunction, ID: h.RackID}, ServerDecommissionedType, left)
}
