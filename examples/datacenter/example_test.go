package datacenter_test

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/twinflow/twinflow/examples/datacenter"
	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/sdk"
	"github.com/twinflow/twinflow/sdk/sdktest"
)

// A server twin that sees its packets dropped alerts and tells its rack.
func ExampleRegister() {
	reg := sdk.NewRegistry()
	if err := datacenter.Register(reg, datacenter.Config{}); err != nil {
		fmt.Println(err)
		return
	}
	h := sdktest.New(reg)
	server := sdk.Address{Type: datacenter.ServerFunction, ID: "srv-0-1"}
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		msg, err := sdk.Encode(datacenter.ServerMetricReportType, &datacenterv1.ServerMetricReport{
			ServerId:         "srv-0-1",
			RackId:           "rack-0",
			ReportedAt:       timestamppb.New(start.Add(time.Duration(i) * 5 * time.Second)),
			PacketDropRate:   0.2,
			PowerSupplyVolts: 12,
		})
		if err != nil {
			fmt.Println(err)
			return
		}
		res, err := h.Invoke(server, msg)
		if err != nil {
			fmt.Println(err)
			return
		}
		for _, e := range res.Egress {
			a, _ := sdk.Decode(datacenter.ServerAlertType, e.Value)
			fmt.Println(e.Egress+":", a.GetKind(), a.GetStatus(), a.GetReason())
		}
		for _, m := range res.Sent {
			inc, _ := sdk.Decode(datacenter.ServerIncidentsType, m.Value)
			fmt.Println("to", m.To.String()+":", inc.GetOpen())
		}
	}
	// Output:
	// to datacenter/rack/rack-0: []
	// alerts: INCIDENT_KIND_PACKET_LOSS ALERT_STATUS_OPEN mean packet drop rate 20.0% over the last 3 reports, above 5%
	// to datacenter/rack/rack-0: [INCIDENT_KIND_PACKET_LOSS]
}
