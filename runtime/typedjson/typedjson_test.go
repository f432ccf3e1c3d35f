package typedjson

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
	"github.com/twinflow/twinflow/runtime/descriptors"
	"github.com/twinflow/twinflow/runtime/descriptors/descriptorstest"
)

// codec knows the builtins and sensors.v1.Reading, a message this test
// binary has no Go code of.
func codec(t *testing.T) *Codec {
	t.Helper()
	r, err := descriptors.New(descriptors.Set{Name: "reading.binpb", Data: descriptorstest.Set()})
	if err != nil {
		t.Fatal(err)
	}
	return New(r.Types())
}

func TestRender(t *testing.T) {
	addr, err := proto.Marshal(&twinflowv1.Address{Type: "a/b", Id: "c"})
	if err != nil {
		t.Fatal(err)
	}
	c := codec(t)
	for _, tc := range []struct {
		typename, data, want string
		ok                   bool
	}{
		{"twinflow/json", `{"a":1}`, `{"a":1}`, true},
		{"twinflow/int64", `42`, `42`, true},
		{"twinflow/bytes", `42`, "", false},
		{"twinflow/json", `{"a":`, "", false},
		{"proto/twinflow.v1.Address", string(addr), `{"type":"a/b","id":"c"}`, true},
		{"proto/twinflow.v1.Address", "\xff\xff", "", false},
		{descriptorstest.Typename, string(descriptorstest.Reading("s-1", 21.5)), `{"sensor":"s-1","celsius":21.5}`, true},
		{"proto/no.such.Message", `{}`, "", false},
	} {
		got, ok := c.Render(tc.typename, []byte(tc.data))
		if ok != tc.ok || strings.ReplaceAll(got, " ", "") != tc.want {
			t.Errorf("Render(%s, %q) = %s, %v; want %s, %v", tc.typename, tc.data, got, ok, tc.want, tc.ok)
		}
	}
	// What the registry does not hold is not JSON, even when it is linked
	// into the binary.
	if got, ok := New(nil).Render("proto/twinflow.v1.Address", addr); ok {
		t.Errorf("a codec without types rendered a twinflow.v1.Address: %s", got)
	}
	if got, ok := New(descriptors.Builtin().Types()).Render(descriptorstest.Typename, descriptorstest.Reading("s", 1)); ok {
		t.Errorf("a codec without the descriptor set rendered a %s: %s", descriptorstest.Message, got)
	}
}

// TestRoundTrip writes a message known only from its descriptor from JSON
// and reads it back, well-known types included.
func TestRoundTrip(t *testing.T) {
	c := codec(t)
	doc := `{"sensor":"s-7","celsius":-3.25,"at":"2026-01-02T03:04:05Z"}`
	b, err := c.Encode(descriptorstest.Typename, doc)
	if err != nil {
		t.Fatal(err)
	}
	if want := descriptorstest.Reading("s-7", -3.25); !strings.HasPrefix(string(b), string(want)) || len(b) == len(want) {
		t.Errorf("Encode = %x; want the sensor and celsius fields %x, then the timestamp", b, want)
	}
	got, ok := c.Render(descriptorstest.Typename, b)
	if !ok || strings.ReplaceAll(got, " ", "") != doc {
		t.Errorf("Render(Encode(%s)) = %s, %v", doc, got, ok)
	}
}

func TestEncode(t *testing.T) {
	c := codec(t)
	b, err := c.Encode("proto/twinflow.v1.Address", `{"type":"a/b","id":"c"}`)
	if err != nil {
		t.Fatal(err)
	}
	var a twinflowv1.Address
	if err := proto.Unmarshal(b, &a); err != nil || a.GetType() != "a/b" || a.GetId() != "c" {
		t.Errorf("Encode of an Address decodes to %v, %v", &a, err)
	}
	if b, err := c.Encode("twinflow/json", `[1,2]`); err != nil || string(b) != `[1,2]` {
		t.Errorf("Encode of JSON = %s, %v", b, err)
	}
	for _, tc := range []struct{ typename, doc, want string }{
		{"twinflow/json", `[1,`, "not a valid JSON document"},
		{"twinflow/bytes", `1`, "raw bytes"},
		{"proto/no.such.Message", `{}`, "unknown to this runtime"},
		{"proto/twinflow.v1.Address", `{"nope":1}`, "not a twinflow.v1.Address"},
		{descriptorstest.Typename, `{"celsius":"warm"}`, "not a " + descriptorstest.Message},
	} {
		if _, err := c.Encode(tc.typename, tc.doc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Encode(%s, %s) = %v; want an error saying %q", tc.typename, tc.doc, err, tc.want)
		}
	}
}
