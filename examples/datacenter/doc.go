// Package datacenter is the data-center digital twin: the Twinflow version
// of the Flink StateFun example "Monitoring and Controlling Networks of IoT
// Devices". Three layers of twins turn raw server metrics into one view of
// the data center's health:
//
//   - datacenter/server (one per server id) keeps a sliding window of the
//     server's last 15 minutes of ServerMetricReports,
//     evaluates a [HealthModel] on it, publishes a ServerAlert on the
//     "alerts" egress whenever an incident opens or resolves, and tells its
//     rack its open incidents whenever they change. A silence timer, re-armed
//     by every report, raises NO_REPORTS when the server goes quiet for
//     [Config.SilenceTimeout].
//   - datacenter/rack (one per rack id) keeps the open incidents of its
//     servers and their histogram, correlates them with a
//     [CorrelationModel] (most servers losing packets means the top-of-rack
//     switch failed) once they have settled for [Config.CorrelationDelay],
//     and sends one RackAlert to the data center when the correlation
//     appears or changes, and RackOk when it clears. Both also go to the
//     "alerts" egress.
//   - datacenter/datacenter (id "dc" by default) keeps the latest alert of
//     each unhealthy rack and answers GetUnhealthyRacks with UnhealthyRacks,
//     as a reply to a NATS request.
//
// Messages are protobuf (package datacenter.v1, generated into gen/); the
// twins' state is JSON, so that `twinflow state get` prints it as it is.
//
// Servers may be commissioned with CommissionServer before they report, and
// leave with DecommissionServer, which cancels their timer, clears their
// state and takes them out of their rack's counts. A server that reports
// without being commissioned is taken into service by its first report.
//
// [Register] adds the twins to an sdk.Registry; cmd/datacenter-functions
// serves them, and the simulator feeds them metrics with injected faults.
package datacenter
