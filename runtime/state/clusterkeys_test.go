package state

import (
	"log/slog"
	"testing"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
)

// TestKeyKindsDistinct guards the key layout: every kind of key within a
// key group has a byte of its own.
func TestKeyKindsDistinct(t *testing.T) {
	seen := map[byte]string{}
	for name, k := range map[string]byte{"value": kindValue, "timer": kindTimer, "token": kindToken, "mailbox": kindMailbox,
		"timer sequence": kindTimerSeq, "spill": kindSpill, "seen": kindSeen, "index": kindIndex, "index count": kindIndexCount,
		"reader position": kindReaderPos, "egress": kindEgress, "sent": kindSentSeq, "received": kindRecvMark} {
		if other, ok := seen[k]; ok {
			t.Errorf("key kinds %s and %s are both %#x", name, other, k)
		}
		seen[k] = name
	}
}

// TestClusterKeys writes what cluster mode keeps in a key group's range,
// reads it back, and drops the key group: nothing of it is left, and its
// neighbours are untouched.
func TestClusterKeys(t *testing.T) {
	s, err := Open(t.TempDir(), Options{KeyGroups: 16, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o := NewOverlay()
	PutReaderPosition(o, 3, "TWINFLOW_IN", 42)
	PutSent(o, 3, 5, 7)
	PutReceived(o, 3, 9, 11)
	for _, id := range []string{"b", "a"} {
		if err := PutKeyGroupEgress(o, 3, &storagev1.EgressRecord{MsgId: id, Subject: "out"}); err != nil {
			t.Fatal(err)
		}
	}
	PutReaderPosition(o, 4, "TWINFLOW_IN", 99)
	PutPosition(o, 3, Position{Seq: 10, Epoch: 2})
	o.Freeze()
	if _, err := s.Commit([]*Overlay{o}, nil); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.ReaderPosition(3, "TWINFLOW_IN"); p != 42 {
		t.Errorf("reader position %d, want 42", p)
	}
	if p, _ := s.ReaderPosition(3, "other"); p != 0 {
		t.Errorf("position of a reader never recorded %d, want 0", p)
	}
	if n, _ := s.Sent(3, 5); n != 7 {
		t.Errorf("sent %d, want 7", n)
	}
	if n, _ := s.Received(3, 9); n != 11 {
		t.Errorf("received %d, want 11", n)
	}
	recs, err := s.KeyGroupEgress(3)
	if err != nil || len(recs) != 2 || recs[0].GetMsgId() != "a" || recs[1].GetMsgId() != "b" {
		t.Fatalf("egress %v, %v: want a and b in order", recs, err)
	}
	del := NewOverlay()
	DeleteKeyGroupEgress(del, 3, "a")
	if err := s.WriteNow("test", del); err != nil {
		t.Fatal(err)
	}
	if recs, _ := s.KeyGroupEgress(3); len(recs) != 1 || recs[0].GetMsgId() != "b" {
		t.Fatalf("egress after deleting a: %v", recs)
	}
	for kg, want := range map[int]bool{3: true, 4: true, 5: false} {
		if got, err := s.HoldsKeyGroup(kg); err != nil || got != want {
			t.Errorf("HoldsKeyGroup(%d) = %v, %v; want %v", kg, got, err, want)
		}
	}
	if err := s.DropKeyGroup(3); err != nil {
		t.Fatal(err)
	}
	if holds, _ := s.HoldsKeyGroup(3); holds {
		t.Error("key group 3 is still held after DropKeyGroup")
	}
	if _, ok, _ := s.Position(3); ok {
		t.Error("key group 3 keeps its position after DropKeyGroup")
	}
	if p, _ := s.ReaderPosition(4, "TWINFLOW_IN"); p != 99 {
		t.Errorf("key group 4's position %d after dropping 3, want 99", p)
	}
}
