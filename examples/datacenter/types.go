package datacenter

import (
	"strings"

	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/sdk"
)

// The function types of the data-center twin.
const (
	// ServerFunction is the twin of one server; its id is the server id.
	ServerFunction = "datacenter/server"
	// RackFunction is the twin of one rack; its id is the rack id.
	RackFunction = "datacenter/rack"
	// DataCenterFunction is the twin of the whole data center; its id is
	// [Config.DataCenterID].
	DataCenterFunction = "datacenter/datacenter"
)

// AlertsEgress is the egress, named in the module spec, on which server and
// rack alerts are published.
const AlertsEgress = "alerts"

// The message types. Every message is protobuf, under the typename
// "proto/datacenter.v1.<Message>".
var (
	ServerMetricReportType   = sdk.ProtoType[*datacenterv1.ServerMetricReport]()
	ServerAlertType          = sdk.ProtoType[*datacenterv1.ServerAlert]()
	RackAlertType            = sdk.ProtoType[*datacenterv1.RackAlert]()
	RackOkType               = sdk.ProtoType[*datacenterv1.RackOk]()
	GetUnhealthyRacksType    = sdk.ProtoType[*datacenterv1.GetUnhealthyRacks]()
	UnhealthyRacksType       = sdk.ProtoType[*datacenterv1.UnhealthyRacks]()
	CommissionServerType     = sdk.ProtoType[*datacenterv1.CommissionServer]()
	DecommissionServerType   = sdk.ProtoType[*datacenterv1.DecommissionServer]()
	ServerIncidentsType      = sdk.ProtoType[*datacenterv1.ServerIncidents]()
	ServerDecommissionedType = sdk.ProtoType[*datacenterv1.ServerDecommissioned]()
	SilenceCheckType         = sdk.ProtoType[*datacenterv1.SilenceCheck]()
	CorrelationCheckType     = sdk.ProtoType[*datacenterv1.CorrelationCheck]()
)

// Kind is the short name of an incident kind, as kept in state and shown to
// operators: "PACKET_LOSS" for INCIDENT_KIND_PACKET_LOSS. State holds names
// rather than enum numbers so that `twinflow state get` reads well.
type Kind string

// The incident kinds of one server.
const (
	HighCPU       Kind = "HIGH_CPU"
	DiskFailing   Kind = "DISK_FAILING"
	PacketLoss    Kind = "PACKET_LOSS"
	NoReports     Kind = "NO_REPORTS"
	PowerDegraded Kind = "POWER_DEGRADED"
)

const kindPrefix = "INCIDENT_KIND_"

// KindOf returns the short name of k.
func KindOf(k datacenterv1.IncidentKind) Kind {
	return Kind(strings.TrimPrefix(k.String(), kindPrefix))
}

// Proto returns the enum value of k, or INCIDENT_KIND_UNSPECIFIED for a
// name it does not know.
func (k Kind) Proto() datacenterv1.IncidentKind {
	return datacenterv1.IncidentKind(datacenterv1.IncidentKind_value[kindPrefix+string(k)])
}

// RackKind is the short name of a rack incident kind: "TOR_SWITCH_FAILURE"
// for RACK_INCIDENT_KIND_TOR_SWITCH_FAILURE.
type RackKind string

// The correlated incident kinds of a rack.
const (
	TORSwitchFailure       RackKind = "TOR_SWITCH_FAILURE"
	PowerDegradation       RackKind = "POWER_DEGRADATION"
	MultipleServerFailures RackKind = "MULTIPLE_SERVER_FAILURES"
)

const rackKindPrefix = "RACK_INCIDENT_KIND_"

// RackKindOf returns the short name of k.
func RackKindOf(k datacenterv1.RackIncidentKind) RackKind {
	return RackKind(strings.TrimPrefix(k.String(), rackKindPrefix))
}

// Proto returns the enum value of k, or RACK_INCIDENT_KIND_UNSPECIFIED for
// a name it does not know.
func (k RackKind) Proto() datacenterv1.RackIncidentKind {
	return datacenterv1.RackIncidentKind(datacenterv1.RackIncidentKind_value[rackKindPrefix+string(k)])
}
