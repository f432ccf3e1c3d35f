package cluster

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/internal/testwait"
)

// testStatus reads the status of a cluster of two members, one of which
// owns a key group and committed a checkpoint to it.
func testStatus(t *testing.T, e *env) {
	c := e.open(t, "status", 4)
	ctx := testContext(t)
	ma := join(t, c, "a")
	join(t, c, "b")
	oa, _ := own(t, c, ma, 2, newStore(t, 4))
	if _, err := c.Commit(ctx, 7, []Part{{Owned: oa, Changes: changes(counters(2, 3, "x"))}}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := e.js.Publish(ctx, c.InSubject(1), []byte("routed")); err != nil {
			t.Fatal(err)
		}
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Groups[1].Routed != 2 || st.Groups[0].Routed != 0 {
		t.Errorf("messages in the partitioned ingress: key group 1 %d, key group 0 %d; want 2 and 0", st.Groups[1].Routed, st.Groups[0].Routed)
	}
	if st.Name != "status" || st.KeyGroups != 4 || len(st.Members) != 2 || len(st.Groups) != 4 {
		t.Fatalf("status %+v: want cluster status, 4 key groups, 2 members", st)
	}
	a := st.Members[0]
	if a.Worker != "a" || len(a.KeyGroups) != 1 || a.KeyGroups[0] != 2 || a.LastCheckpoint != 7 || a.LastHeartbeat.IsZero() {
		t.Fatalf("member a: %+v, want key group 2 and checkpoint 7", a)
	}
	if st.Members[0].Assigned+st.Members[1].Assigned != 4 {
		t.Fatalf("assigned %d + %d key groups, want 4 in all", st.Members[0].Assigned, st.Members[1].Assigned)
	}
	g := st.Groups[2]
	if g.Holder != ma.Self().Holder() || g.Epoch != oa.Epoch() || g.Head != oa.Head() || g.HeadKind != kindCheckpoint || g.HeadCheckpoint != 7 {
		t.Fatalf("key group 2: %+v, want held by a at its head %d", g, oa.Head())
	}
	if st.Groups[0].Head != 0 || !st.Groups[0].Holder.IsZero() {
		t.Fatalf("key group 0: %+v, want no owner and no changelog", st.Groups[0])
	}

	// Heartbeats carry what the member reports of its readers' lag.
	ma.Report(map[string]uint64{"TWINFLOW_DIRECT": 5})
	testwait.Nil(t, "a's lag in the status", func() error {
		st, err := c.Status(ctx)
		if err == nil && st.Members[0].Lag["TWINFLOW_DIRECT"] != 5 {
			err = fmt.Errorf("a's lag %v, want TWINFLOW_DIRECT: 5", st.Members[0].Lag)
		}
		return err
	})

	// A drained member is assigned nothing until it is undrained. The
	// status reads the bucket through a new watch, whose consumer may sit
	// on a replica that has not applied the write just acknowledged: it
	// shows the drain within a replication round, not at once.
	if err := c.Drain(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	testwait.Nil(t, "a drained in the status", func() error {
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		if a, b := st.Members[0], st.Members[1]; !a.Draining || a.Assigned != 0 || b.Draining || b.Assigned != 4 {
			return fmt.Errorf("after draining a: a %+v, b %+v; want a drained with nothing assigned, b assigned all 4", a, b)
		}
		return nil
	})
	if err := c.Undrain(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	testwait.Nil(t, "a undrained in the status", func() error {
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		if a := st.Members[0]; a.Draining || a.Assigned == 0 {
			return fmt.Errorf("after undraining a: %+v, want it assigned key groups again", a)
		}
		return nil
	})
}

// testMessagesWithCheckpoint commits messages to other key groups with a
// checkpoint: they are stored with it, after the record, and the owner's
// head is its record's last message; a fenced commit stores none.
func testMessagesWithCheckpoint(t *testing.T, e *env) {
	c := e.open(t, "messages", 4)
	ctx := testContext(t)
	ma := join(t, c, "a")
	oa, _ := own(t, c, ma, 1, newStore(t, 4))
	msgs := []Message{{To: 3, Header: nats.Header{"X-Test": {"one"}}, Data: []byte("to three")}, {To: 0, Data: []byte("to zero")}}
	if _, err := c.Commit(ctx, 1, []Part{{Owned: oa, Changes: changes(counters(1, 2, "x")), Messages: msgs}}); err != nil {
		t.Fatal(err)
	}
	last, err := c.log.GetLastMsgForSubject(ctx, c.changelogSubject(1))
	if err != nil {
		t.Fatal(err)
	}
	if oa.Head() != last.Sequence {
		t.Fatalf("head %d after a commit with messages, want the record's last message %d", oa.Head(), last.Sequence)
	}
	got, err := c.log.GetLastMsgForSubject(ctx, c.MessageSubject(3))
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Data) != "to three" || got.Header.Get("X-Test") != "one" || got.Sequence <= last.Sequence {
		t.Fatalf("message to 3: %q %v at %d, want it after the record at %d", got.Data, got.Header, got.Sequence, last.Sequence)
	}
	// Another owner takes the key group: the old owner's next commit and
	// its messages are refused together.
	mb := join(t, c, "b")
	own(t, c, mb, 1, newStore(t, 4))
	_, err = c.Commit(ctx, 2, []Part{{Owned: oa, Changes: changes(counters(1, 2, "y")), Messages: []Message{{To: 2, Data: []byte("never")}}}})
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("commit of a taken key group: %v, want ErrFenced", err)
	}
	if _, err := c.log.GetLastMsgForSubject(ctx, c.MessageSubject(2)); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("a fenced commit's message: %v, want none stored", err)
	}
}
