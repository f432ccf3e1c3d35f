package routing

import (
	"errors"
	"maps"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/twinflow/twinflow/runtime/shard"
)

func TestHeadRoundTrip(t *testing.T) {
	in := Head{Kind: kindRouted, Holder: "w1/abc", Epoch: 7,
		Routed: Positions{"TWINFLOW_IN": 12, "TWINFLOW_INGRESS_x": 1 << 40}, Through: Positions{"TWINFLOW_IN": 9}}
	h := nats.Header{}
	in.set(h)
	if got := h.Get(hdrRouted); got != "TWINFLOW_IN=12 TWINFLOW_INGRESS_x=1099511627776" {
		t.Errorf("routed header %q", got)
	}
	out, err := ParseHead(h)
	if err != nil {
		t.Fatal(err)
	}
	if out.Kind != in.Kind || out.Holder != in.Holder || out.Epoch != in.Epoch || !maps.Equal(out.Routed, in.Routed) || !maps.Equal(out.Through, in.Through) {
		t.Fatalf("parsed %+v, want %+v", out, in)
	}
	empty := Head{Kind: kindMarker, Epoch: 1, Routed: Positions{}, Through: Positions{}}
	h = nats.Header{}
	empty.set(h)
	if out, err := ParseHead(h); err != nil || len(out.Routed) != 0 || out.Kind != kindMarker {
		t.Fatalf("empty positions: %+v, %v", out, err)
	}
	for name, bad := range map[string]nats.Header{
		"no kind":        {hdrEpoch: {"1"}},
		"bad epoch":      {hdrKind: {kindRouted}, hdrEpoch: {"x"}},
		"bad routed":     {hdrKind: {kindRouted}, hdrEpoch: {"1"}, hdrRouted: {"TWINFLOW_IN"}},
		"bad through":    {hdrKind: {kindRouted}, hdrEpoch: {"1"}, hdrThrough: {"TWINFLOW_IN=-1"}},
		"empty stream":   {hdrKind: {kindRouted}, hdrEpoch: {"1"}, hdrRouted: {"=4"}},
		"changelog kind": {hdrKind: {"checkpoint"}, hdrEpoch: {"1"}},
	} {
		if _, err := ParseHead(bad); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestTakeover(t *testing.T) {
	head := func(epoch uint64, routed, through Positions) Head {
		return Head{Kind: kindRouted, Epoch: epoch, Routed: routed, Through: through}
	}
	for _, tc := range []struct {
		name   string
		epoch  uint64
		lasts  []Last
		from   Positions
		routed []Positions
		fenced bool
	}{
		{name: "empty stream: from the start", epoch: 1, lasts: make([]Last, 3),
			from: Positions{}, routed: []Positions{{}, {}, {}}},
		{name: "from the highest through; each key group skips what it holds", epoch: 5, lasts: []Last{
			{Seq: 10, Head: head(4, Positions{"a": 30, "b": 7}, Positions{"a": 20, "b": 7})},
			{Seq: 11, Head: head(4, Positions{"a": 25}, Positions{"a": 25, "b": 3})},
			{},
			{Seq: 3, Head: head(2, Positions{"a": 2}, Positions{"a": 2})},
		}, from: Positions{"a": 25, "b": 7}, routed: []Positions{{"a": 30, "b": 7}, {"a": 25}, {}, {"a": 2}}},
		{name: "own epoch again (a rebuilt pipeline)", epoch: 4, lasts: []Last{
			{Seq: 10, Head: head(4, Positions{"a": 30}, Positions{"a": 20})},
		}, from: Positions{"a": 20}, routed: []Positions{{"a": 30}}},
		{name: "a newer router wrote", epoch: 4, lasts: []Last{
			{Seq: 10, Head: head(4, Positions{"a": 30}, Positions{"a": 20})},
			{Seq: 12, Head: head(6, Positions{}, Positions{"a": 20})},
		}, fenced: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Takeover(tc.epoch, tc.lasts)
			var fe *FencedError
			if tc.fenced {
				if !errors.As(err, &fe) || fe.ByEpoch != 6 || fe.KeyGroup != 1 {
					t.Fatalf("err %v, want fenced by epoch 6 at key group 1", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(st.From, tc.from) {
				t.Errorf("from %v, want %v", st.From, tc.from)
			}
			for kg, want := range tc.routed {
				if !maps.Equal(st.Routed[kg], want) {
					t.Errorf("key group %d: routed %v, want %v", kg, st.Routed[kg], want)
				}
				if st.Heads[kg] != tc.lasts[kg].Seq {
					t.Errorf("key group %d: head %d, want %d", kg, st.Heads[kg], tc.lasts[kg].Seq)
				}
			}
		})
	}
}

func TestOnRefused(t *testing.T) {
	at := func(seq, epoch uint64) Last { return Last{Seq: seq, Head: Head{Epoch: epoch}} }
	for _, tc := range []struct {
		name       string
		epoch, hd  uint64
		last       Last
		want       Refused
		impossible bool
	}{
		{"not stored", 3, 40, at(40, 3), Retry, false},
		{"stored, answer lost", 3, 40, at(41, 3), Adopt, false},
		{"a newer router's marker", 3, 40, at(41, 4), Stop, false},
		{"a newer router wrote since", 3, 40, at(90, 5), Stop, false},
		{"an older router wrote after this one's marker", 3, 40, at(41, 2), Retry, true},
		{"subject purged to nothing", 3, 40, Last{}, Retry, true},
	} {
		got, err := OnRefused(tc.epoch, tc.hd, tc.last)
		if (err != nil) != tc.impossible || got != tc.want {
			t.Errorf("%s: %v, %v; want %v (error %v)", tc.name, got, err, tc.want, tc.impossible)
		}
	}
}

func TestCoversSkipsWhatAKeyGroupHolds(t *testing.T) {
	p := Positions{"a": 10}
	for _, tc := range []struct {
		stream string
		seq    uint64
		want   bool
	}{{"a", 9, true}, {"a", 10, true}, {"a", 11, false}, {"b", 1, false}} {
		if got := p.Covers(tc.stream, tc.seq); got != tc.want {
			t.Errorf("%s %d: covered %v, want %v", tc.stream, tc.seq, got, tc.want)
		}
	}
}

func TestCutEndsAtASourceMessage(t *testing.T) {
	it := func(seq uint64, size int) item {
		return item{seq: seq, env: shard.Envelope{Payload: make([]byte, size-32)}}
	}
	for _, tc := range []struct {
		name  string
		items []item
		limit int
		want  int
	}{
		{"all fit", []item{it(1, 100), it(2, 100)}, 1000, 2},
		{"the second message does not fit", []item{it(1, 600), it(2, 600), it(3, 40)}, 1000, 1},
		{"a message's items stay together", []item{it(1, 400), it(2, 400), it(2, 400), it(3, 40)}, 1000, 1},
		{"one message larger than the limit goes alone", []item{it(1, 2000), it(2, 40)}, 1000, 1},
		{"one message in all, larger than the limit", []item{it(1, 700), it(1, 700)}, 1000, 2},
	} {
		if got := cut(tc.items, tc.limit); got != tc.want {
			t.Errorf("%s: cut at %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestItemsRoundTrip(t *testing.T) {
	in := []shard.Envelope{
		{Target: shard.Address{Type: "t", ID: "a"}, Typename: "x/y", Payload: []byte("1"), ReplyTo: "_INBOX.1", Published: 1700, Key: "TWINFLOW_IN/k1"},
		{Target: shard.Address{Type: "t", ID: "b"}, Typename: "x/z", Payload: nil},
	}
	data, err := encodeItems(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeItems(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Target != in[0].Target || out[0].Typename != "x/y" || string(out[0].Payload) != "1" ||
		out[0].ReplyTo != "_INBOX.1" || out[0].Published != 1700 || out[0].Key != "TWINFLOW_IN/k1" ||
		out[1].Target != in[1].Target || out[1].Key != "" || out[1].Published != 0 {
		t.Fatalf("decoded %+v, want %+v", out, in)
	}
	for _, cut := range []int{0, 1, 5, len(data) - 1} {
		if _, err := decodeItems(data[:cut]); err == nil {
			t.Errorf("cut to %d of %d bytes: decoded", cut, len(data))
		}
	}
}
