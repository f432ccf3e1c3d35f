package datacenter

import "strings"

// The NATS subjects and headers of deploy/datacenter/module.yaml, for
// publishers and subscribers.
const (
	// MetricsSubjectPrefix starts the metrics subjects,
	// datacenter.metrics.<rack>.<server>.
	MetricsSubjectPrefix = "datacenter.metrics."
	// ProvisioningSubjectPrefix starts the provisioning subjects,
	// datacenter.provisioning.<rack>.
	ProvisioningSubjectPrefix = "datacenter.provisioning."
	// ServerHeader names the server a provisioning message is about; the
	// ingress routes it to that server's twin.
	ServerHeader = "Datacenter-Server"
	// AlertsSubject is where the alerts egress publishes.
	AlertsSubject = "datacenter.alerts"
	// TypenameHeader is Twinflow's header for the typename of a message on
	// an ingress without a fixed typename, and of an egress record.
	TypenameHeader = "Twinflow-Typename"
	// ReplyToHeader is Twinflow's header for the subject a request is
	// answered on: JetStream does not keep the reply subject of a publish.
	ReplyToHeader = "Twinflow-Reply-To"
)

// MetricsSubject returns the subject a server's reports are published on.
// Rack and server ids must be valid NATS tokens: no dots, spaces, * or >.
func MetricsSubject(rack, server string) string {
	return MetricsSubjectPrefix + rack + "." + server
}

// ProvisioningSubject returns the subject on which servers of a rack are
// commissioned and decommissioned.
func ProvisioningSubject(rack string) string {
	return ProvisioningSubjectPrefix + rack
}

// DirectSubject returns the subject of Twinflow's direct ingress for the
// address (functionType, id): twinflow.in.<namespace>.<name>.<id>. The id
// must be a valid NATS token, as the ids of this example are.
func DirectSubject(functionType, id string) string {
	return "twinflow.in." + strings.Replace(functionType, "/", ".", 1) + "." + id
}
