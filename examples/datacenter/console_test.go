package datacenter_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/twinflow/twinflow/examples/datacenter"
	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/examples/datacenter/sim"
	"github.com/twinflow/twinflow/internal/browsertest"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/secrets"
)

// TestConsoleInBrowser runs the web console in a real browser (Chromium,
// headless) against a worker running the data-center twin on a simulated
// clock, as TestEndToEnd does: the example's page shows the racks healthy,
// then, without a reload, rack-1 unhealthy with its alert once its switch
// fails; a server's page shows its state, delayed messages and recent
// activity; a message sent from a twin's page gets its reply; the twin
// explorer lists and filters addresses; the platform page charts the
// runtime; and a dead letter is replayed and counted. Every page passes
// the accessibility checks, and a screenshot of each is written.
func TestConsoleInBrowser(t *testing.T) {
	const (
		interval   = 5 * time.Second
		failAt     = 20 * time.Second
		faultyRack = "rack-1"
	)
	dc, err := sim.New(sim.Config{Racks: 3, ServersPerRack: 4, Seed: 1}, []sim.Fault{{Kind: sim.TOR, Target: faultyRack, At: failAt}})
	if err != nil {
		t.Fatal(err)
	}
	var faulty []string
	for _, s := range dc.Servers() {
		if s.Rack == faultyRack {
			faulty = append(faulty, s.ID)
		}
	}
	slices.Sort(faulty)
	d := deploy(t, false)
	d.commission(dc.Servers())
	next := time.Duration(0)
	runUntil := func(end time.Duration) {
		for ; next <= end; next += interval {
			d.round(dc, next)
		}
	}
	runUntil(interval)

	b := browsertest.Start(t)
	token, err := secrets.ReadAdminToken(d.engine.Access().AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	admin := d.engine.AdminURL()
	b.Login(admin, token, "/ui/apps/datacenter/")

	// The example's page: three healthy racks of four servers.
	b.WaitJS("three healthy racks", `document.querySelectorAll('[data-rack][data-health="healthy"]').length === 3`)
	b.WaitJS("twelve servers", `document.querySelectorAll('[data-server]').length === 12`)
	b.WaitText("the answer to GetUnhealthyRacks", "#answer", "No unhealthy rack")
	b.Accessible("the data-center page, all healthy")

	// The switch of rack-1 fails: the page follows without a reload.
	runUntil(failAt + interval)
	b.WaitJS(faultyRack+" unhealthy", fmt.Sprintf(`document.querySelector('[data-rack=%q]')?.dataset.health === "unhealthy"`, faultyRack))
	b.WaitText("the rack alert", "#alerts", "TOR_SWITCH_FAILURE")
	b.WaitText("GetUnhealthyRacks naming "+faultyRack, "#unhealthy-racks", faultyRack+": TOR_SWITCH_FAILURE")
	b.WaitJS("the faulty servers marked", fmt.Sprintf(`[...document.querySelectorAll('[data-rack=%q] [data-server]')].every(c => c.dataset.health === "incident")`, faultyRack))
	if n := browsertest.Eval[int](b, `document.querySelectorAll('[data-server][data-health="incident"]').length`); n != len(faulty) {
		t.Errorf("%d servers shown with an incident, want the %d of %s", n, len(faulty), faultyRack)
	}
	if n := browsertest.Eval[int](b, `document.querySelectorAll('[data-rack][data-health="unhealthy"]').length`); n != 1 {
		t.Errorf("%d racks shown unhealthy, want %s alone", n, faultyRack)
	}
	b.WaitText("the incidents", "#incidents", "PACKET_LOSS")
	b.WaitText("the change in the log", "#log", "opened rack alert: "+faultyRack)
	b.Accessible("the data-center page with an unhealthy rack")
	b.Screenshot("datacenter")

	// A server's twin, opened from the grid: its state, its pending
	// silence check, what it received.
	srv := faulty[0]
	b.ClickLive(fmt.Sprintf(`[data-server=%q]`, srv)) // the grid is redrawn with every sample
	b.WaitJS("the server's page", fmt.Sprintf(`location.hash === %q`, "#/twins/datacenter%2Fserver/"+srv))
	b.WaitText("the server's health", `[data-name="health"]`, `"rackId": "`+faultyRack+`"`)
	b.WaitText("the open incident in its state", `[data-name="health"]`, "PACKET_LOSS")
	b.WaitText("its window", `[data-name="window"]`, "packetDrop")
	b.WaitText("its pending silence check", "main", "proto/datacenter.v1.SilenceCheck")
	b.WaitText("the reports it received", "main", "proto/datacenter.v1.ServerMetricReport")
	b.Accessible("a server's page")
	b.Screenshot("twin")

	// A request from the data-center twin's page, answered.
	b.Open(admin + "/ui/#/twins/datacenter%2Fdatacenter/dc")
	b.WaitText("the data center's state", `[data-name="unhealthyRacks"]`, faultyRack)
	b.Do(
		chromedp.SetValue(chromedp.CSS("#send-typename"), datacenter.GetUnhealthyRacksType.Typename()),
		chromedp.SetValue(chromedp.CSS("#send-payload"), "{}"),
		chromedp.Click(chromedp.CSS("#send-request")),
		chromedp.Click(chromedp.CSS(`#send-h ~ form button[type="submit"]`)),
	)
	b.WaitText("the reply", `#send-h ~ form .output`, `"rackId": "`+faultyRack+`"`)

	// The twin explorer: the function types with their counts, and the
	// servers by id prefix.
	b.Open(admin + "/ui/#/twins")
	b.WaitText("the function types", "main table", "datacenter/server")
	b.Accessible("the function types")
	b.Open(admin + "/ui/#/twins/datacenter%2Fserver")
	b.WaitText("the count of servers", "main", "12 addresses of datacenter/server have state")
	b.Do(chromedp.SetValue(chromedp.CSS("#prefix"), "srv-1-"), chromedp.Click(chromedp.CSS(`form[role="search"] button`)))
	b.WaitJS("the servers of rack 1", `document.querySelectorAll("ul.ids li").length === 4`)
	if got := b.Text("ul.ids"); strings.Join(strings.Fields(got), " ") != strings.Join(faulty, " ") {
		t.Errorf("servers listed with the prefix srv-1-: %q, want %v", got, faulty)
	}
	b.Accessible("the addresses of a function type")

	// The platform page, live.
	b.Open(admin + "/ui/#/platform")
	b.WaitJS("the charts", `document.querySelectorAll("svg.chart").length >= 6`)
	b.WaitText("the endpoint, reachable", "main", "reachable")
	b.WaitText("the functions with their latency", "main", "datacenter/server")
	b.WaitText("the ingress streams", "main", "TWINFLOW_INGRESS_metrics")
	b.WaitText("the live feed", "#live", "live")
	b.Accessible("the platform page")
	b.Screenshot("platform")

	// A report of a server that was never commissioned is dead-lettered;
	// once the server is commissioned, replaying the report applies it.
	late := &datacenterv1.ServerMetricReport{ServerId: "srv-9-0", ReportedAt: timestamppb.New(t0.Add(next - interval)), PowerSupplyVolts: 12}
	subject, err := router.DirectSubject(datacenter.ServerFunction, late.GetServerId())
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(subject)
	m.Header.Set(router.TypenameHeader, datacenter.ServerMetricReportType.Typename())
	m.Data = marshal(t, late)
	d.publish([]*nats.Msg{m})
	b.Open(admin + "/ui/#/deadletters")
	b.WaitText("the dead letter", "#dlq-summary", "1 dead letter, 0 replayed")
	b.WaitText("its error", "main table", "was not commissioned")
	d.commission([]sim.Server{{ID: late.GetServerId(), Rack: "rack-0"}})
	b.Do(chromedp.Click(chromedp.CSS(`main table input[type="checkbox"]`)), chromedp.Click(chromedp.CSS("#replay")))
	b.WaitText("the replay", "main .output", "replayed to twinflow.in.datacenter.server.srv-9-0")
	b.WaitText("the replay counted", "#dlq-summary", "1 replayed")
	b.Accessible("the dead letters page")
	b.Screenshot("deadletters")
	d.await("the replayed report to reach the twin", func() error {
		h, _ := readState(d, datacenter.ServerFunction, late.GetServerId(), datacenter.ServerHealthState)
		if !h.LastReportAt.Equal(late.GetReportedAt().AsTime()) {
			return fmt.Errorf("the newest report of %s is of %v", late.GetServerId(), h.LastReportAt)
		}
		return nil
	})
}
