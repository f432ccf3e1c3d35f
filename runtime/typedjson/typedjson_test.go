package typedjson

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

func TestRender(t *testing.T) {
	addr, err := proto.Marshal(&twinflowv1.Address{Type: "a/b", Id: "c"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		typename, data, want string
		ok                   bool
	}{
		{"twinflow/json", `{"a":1}`, `{"a":1}`, true},
		{"twinflow/int64", `42`, `42`, true},
		{"twinflow/bytes", `42`, "", false},
		{"twinflow/json", `{"a":`, "", false},
		{"proto/twinflow.v1.Address", string(addr), `{"type":"a/b","id":"c"}`, true},
		{"proto/twinflow.v1.Address", "\xff\xff", "", false},
		{"proto/no.such.Message", `{}`, "", false},
	} {
		got, ok := Render(c.typename, []byte(c.data))
		if ok != c.ok || strings.ReplaceAll(got, " ", "") != c.want {
			t.Errorf("Render(%s, %q) = %s, %v; want %s, %v", c.typename, c.data, got, ok, c.want, c.ok)
		}
	}
}

func TestEncode(t *testing.T) {
	b, err := Encode("proto/twinflow.v1.Address", `{"type":"a/b","id":"c"}`)
	if err != nil {
		t.Fatal(err)
	}
	var a twinflowv1.Address
	if err := proto.Unmarshal(b, &a); err != nil || a.GetType() != "a/b" || a.GetId() != "c" {
		t.Errorf("Encode of an Address decodes to %v, %v", &a, err)
	}
	if b, err := Encode("twinflow/json", `[1,2]`); err != nil || string(b) != `[1,2]` {
		t.Errorf("Encode of JSON = %s, %v", b, err)
	}
	for _, c := range []struct{ typename, doc, want string }{
		{"twinflow/json", `[1,`, "not a valid JSON document"},
		{"twinflow/bytes", `1`, "raw bytes"},
		{"proto/no.such.Message", `{}`, "unknown to this runtime"},
		{"proto/twinflow.v1.Address", `{"nope":1}`, "not a twinflow.v1.Address"},
	} {
		if _, err := Encode(c.typename, c.doc); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Encode(%s, %s) = %v; want an error saying %q", c.typename, c.doc, err, c.want)
		}
	}
}
