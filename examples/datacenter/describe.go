package datacenter

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/sdk"
)

// DescribeAlert renders a record of the alerts egress (a ServerAlert,
// RackAlert or RackOk, named by its typename) as one line for a terminal.
func DescribeAlert(typename string, b []byte) (string, error) {
	v := sdk.TypedValue{Typename: typename, Bytes: b}
	switch typename {
	case ServerAlertType.Typename():
		a, err := sdk.Decode(ServerAlertType, v)
		if err != nil {
			return "", err
		}
		if a.GetStatus() == datacenterv1.AlertStatus_ALERT_STATUS_RESOLVED {
			return fmt.Sprintf("%s server RESOLVED %s/%s %s (open since %s: %s)",
				clock(a.GetResolvedAt()), a.GetRackId(), a.GetServerId(), KindOf(a.GetKind()), clock(a.GetOpenedAt()), a.GetReason()), nil
		}
		return fmt.Sprintf("%s server OPEN     %s/%s %s: %s",
			clock(a.GetOpenedAt()), a.GetRackId(), a.GetServerId(), KindOf(a.GetKind()), a.GetReason()), nil
	case RackAlertType.Typename():
		a, err := sdk.Decode(RackAlertType, v)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s rack   ALERT    %s %s [%s]: %s",
			clock(a.GetUpdatedAt()), a.GetRackId(), RackKindOf(a.GetKind()), strings.Join(a.GetServerIds(), " "), a.GetReason()), nil
	case RackOkType.Typename():
		a, err := sdk.Decode(RackOkType, v)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s rack   OK       %s", clock(a.GetClearedAt()), a.GetRackId()), nil
	}
	return "", fmt.Errorf("not an alert: typename %q", typename)
}

func clock(t *timestamppb.Timestamp) string {
	return t.AsTime().Local().Format(time.TimeOnly)
}

// DescribeUnhealthyRacks renders the answer to GetUnhealthyRacks, one line
// per rack, for a terminal.
func DescribeUnhealthyRacks(u *datacenterv1.UnhealthyRacks) string {
	if len(u.GetRacks()) == 0 {
		return "all racks are healthy\n"
	}
	var b strings.Builder
	for _, r := range u.GetRacks() {
		fmt.Fprintf(&b, "%s %s since %s (updated %s) [%s]: %s\n", r.GetRackId(), RackKindOf(r.GetKind()),
			clock(r.GetOpenedAt()), clock(r.GetUpdatedAt()), strings.Join(r.GetServerIds(), " "), r.GetReason())
	}
	return b.String()
}
