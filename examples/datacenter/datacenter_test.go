package datacenter_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/twinflow/twinflow/examples/datacenter"
	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/sdk"
	"github.com/twinflow/twinflow/sdk/sdktest"
)

func TestUnhealthyRacksStateExpires(t *testing.T) {
	s := datacenter.UnhealthyRacksState
	if s.ExpiryMode != sdk.ExpireAfterWrite || s.ExpireAfter != time.Hour {
		t.Fatalf("unhealthy racks expire %v after %v, want ExpireAfterWrite after 1h", s.ExpiryMode, s.ExpireAfter)
	}
	if r := datacenter.RackStateSpec; r.ExpiryMode != sdk.ExpireNever {
		t.Errorf("rack state expires (%v): servers that never change would be forgotten", r.ExpiryMode)
	}
}

func rackAlert(rack string, kind datacenterv1.RackIncidentKind, servers ...string) *datacenterv1.RackAlert {
	return &datacenterv1.RackAlert{
		RackId: rack, Kind: kind, ServerIds: servers, Reason: "because", KnownServers: 8,
		OpenedAt: timestamppb.New(t0), UpdatedAt: timestamppb.New(t0.Add(time.Second)),
	}
}

// ask sends GetUnhealthyRacks as a request and returns the answer.
func ask(t *testing.T, h *sdktest.Harness) *datacenterv1.UnhealthyRacks {
	t.Helper()
	res := invoke(t, h, dcAddr(), datacenter.GetUnhealthyRacksType, &datacenterv1.GetUnhealthyRacks{}, sdktest.WithReplyTo("_INBOX.question"))
	if len(res.Replies) != 1 || res.Replies[0].ReplyTo != "_INBOX.question" {
		t.Fatalf("replies %v, want one answer to _INBOX.question", res.Replies)
	}
	answer, err := sdk.Decode(datacenter.UnhealthyRacksType, res.Replies[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return answer
}

func rackIDs(u *datacenterv1.UnhealthyRacks) []string {
	var ids []string
	for _, r := range u.GetRacks() {
		ids = append(ids, r.GetRackId())
	}
	return ids
}

func TestDataCenterAnswersUnhealthyRacks(t *testing.T) {
	h := newHarness(t, datacenter.Config{})
	if got := ask(t, h); len(got.GetRacks()) != 0 {
		t.Fatalf("answer %v, want no racks", got)
	}
	tor := datacenterv1.RackIncidentKind_RACK_INCIDENT_KIND_TOR_SWITCH_FAILURE
	power := datacenterv1.RackIncidentKind_RACK_INCIDENT_KIND_POWER_DEGRADATION
	invoke(t, h, dcAddr(), datacenter.RackAlertType, rackAlert("rack-3", power, "srv-3-0", "srv-3-1"))
	invoke(t, h, dcAddr(), datacenter.RackAlertType, rackAlert("rack-1", tor, "srv-1-0", "srv-1-1"))
	invoke(t, h, dcAddr(), datacenter.RackAlertType, rackAlert("rack-1", tor, "srv-1-0", "srv-1-1", "srv-1-2"))

	got := ask(t, h)
	if ids := rackIDs(got); !slices.Equal(ids, []string{"rack-1", "rack-3"}) {
		t.Fatalf("unhealthy racks %v, want rack-1 and rack-3 in order", ids)
	}
	r1 := got.GetRacks()[0]
	if r1.GetKind() != tor || len(r1.GetServerIds()) != 3 || r1.GetKnownServers() != 8 || !r1.GetOpenedAt().AsTime().Equal(t0) {
		t.Fatalf("rack-1 %v, want its latest alert", r1)
	}

	text := datacenter.DescribeUnhealthyRacks(got)
	if lines := strings.Split(strings.TrimSpace(text), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "rack-1 TOR_SWITCH_FAILURE since ") ||
		!strings.HasSuffix(lines[0], "[srv-1-0 srv-1-1 srv-1-2]: because") {
		t.Errorf("described as\n%s", text)
	}

	invoke(t, h, dcAddr(), datacenter.RackOkType, &datacenterv1.RackOk{RackId: "rack-1"})
	if ids := rackIDs(ask(t, h)); !slices.Equal(ids, []string{"rack-3"}) {
		t.Fatalf("unhealthy racks %v after rack-1 is OK", ids)
	}
	// An OK from a rack that was never unhealthy changes nothing.
	invoke(t, h, dcAddr(), datacenter.RackOkType, &datacenterv1.RackOk{RackId: "rack-9"})
	invoke(t, h, dcAddr(), datacenter.RackOkType, &datacenterv1.RackOk{RackId: "rack-3"})
	if _, ok, _ := sdktest.StateOf(h, dcAddr(), datacenter.UnhealthyRacksState); ok {
		t.Fatal("the state of a healthy data center was kept")
	}
	if text := datacenter.DescribeUnhealthyRacks(ask(t, h)); text != "all racks are healthy\n" {
		t.Errorf("described as %q", text)
	}
}

func TestDataCenterAnswersFunctionsAndRejectsPlainSends(t *testing.T) {
	h := newHarness(t, datacenter.Config{})
	// A function asking gets the answer as a message.
	asker := sdk.Address{Type: "ops/console", ID: "1"}
	res := invoke(t, h, dcAddr(), datacenter.GetUnhealthyRacksType, &datacenterv1.GetUnhealthyRacks{}, sdktest.WithCaller(asker))
	if got := sentOf(t, res, asker, datacenter.UnhealthyRacksType); len(got) != 1 {
		t.Fatalf("sent %v, want UnhealthyRacks to the asker", res.Sent)
	}
	// A plain send has nobody to answer: that is the sender's mistake.
	_, err := h.Invoke(dcAddr(), encode(t, datacenter.GetUnhealthyRacksType, &datacenterv1.GetUnhealthyRacks{}))
	var e *sdktest.Error
	if !errors.As(err, &e) || !e.Terminal {
		t.Fatalf("err = %v, want a terminal error", err)
	}
}

func TestDataCenterIDIsConfigurable(t *testing.T) {
	h := newHarness(t, datacenter.Config{DataCenterID: "eu-west", CorrelationDelay: -1})
	rack := rackAddr("rack-1")
	for _, s := range []string{"a", "b"} {
		res := invoke(t, h, rack, datacenter.ServerIncidentsType, incidents(s, 0, packetLoss))
		if s == "b" && len(sentOf(t, res, sdk.Address{Type: datacenter.DataCenterFunction, ID: "eu-west"}, datacenter.RackAlertType)) != 1 {
			t.Fatalf("sent %v, want the alert to datacenter/datacenter/eu-west", res.Sent)
		}
	}
}
