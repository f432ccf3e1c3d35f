package descriptors

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/twinflow/twinflow/runtime/descriptors/descriptorstest"
)

func set(t *testing.T, files ...*descriptorpb.FileDescriptorProto) []byte {
	t.Helper()
	b, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: files})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func knows(r *Registry, name string) bool {
	_, err := r.Types().FindMessageByName(protoreflect.FullName(name))
	return err == nil
}

// alarm is a file importing the Reading's file.
func alarm() *descriptorpb.FileDescriptorProto {
	return &descriptorpb.FileDescriptorProto{
		Name: proto.String("sensors/v1/alarm.proto"), Package: proto.String("sensors.v1"), Syntax: proto.String("proto3"),
		Dependency: []string{descriptorstest.Path},
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("Alarm"), Field: []*descriptorpb.FieldDescriptorProto{{
			Name: proto.String("reading"), Number: proto.Int32(1), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
			Type: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(), TypeName: proto.String("." + descriptorstest.Message),
		}}}},
	}
}

func TestBuiltins(t *testing.T) {
	r := Builtin()
	for _, name := range []string{"google.protobuf.Timestamp", "google.protobuf.Any", "twinflow.v1.Address", "twinflow.v1.ListFunctionTypesResponse"} {
		if !knows(r, name) {
			t.Errorf("the builtin registry does not know %s", name)
		}
	}
	if knows(r, descriptorstest.Message) {
		t.Errorf("the builtin registry knows %s", descriptorstest.Message)
	}
	if len(r.DescriptorSet()) != 0 {
		t.Errorf("the builtin registry's descriptor set holds %d bytes; want none", len(r.DescriptorSet()))
	}
}

// TestLoad reads sets from files, in any order of their files, and serves
// what they added as one set that a client's registry reads back.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	// The importing file first, and the imported file in a set of its own
	// too: a shared import.
	a, b := filepath.Join(dir, "a.binpb"), filepath.Join(dir, "b.binpb")
	for p, data := range map[string][]byte{a: set(t, alarm(), descriptorstest.File()), b: descriptorstest.Set()} {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Load([]string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sensors.v1.Alarm", descriptorstest.Message, "google.protobuf.Timestamp"} {
		if !knows(r, name) {
			t.Errorf("the registry does not know %s", name)
		}
	}
	var served descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(r.DescriptorSet(), &served); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range served.GetFile() {
		names = append(names, f.GetName())
	}
	if want := descriptorstest.Path + " sensors/v1/alarm.proto"; strings.Join(names, " ") != want {
		t.Errorf("the descriptor set holds %v; want %s, imports first", names, want)
	}
	client, err := New(Set{Name: "the runtime's", Data: r.DescriptorSet()})
	if err != nil {
		t.Fatal(err)
	}
	if !knows(client, "sensors.v1.Alarm") {
		t.Error("a registry of the served descriptor set does not know sensors.v1.Alarm")
	}
}

// TestErrors: each bad set is refused, naming its file and what is wrong.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	reading := write("reading.binpb", descriptorstest.Set())
	changed := descriptorstest.File()
	changed.MessageType[0].Field[1].Name = proto.String("fahrenheit")
	renamed := descriptorstest.File()
	renamed.Name = proto.String("other/reading.proto")
	badType := alarm()
	badType.Dependency = nil
	badType.MessageType[0].Field[0].TypeName = proto.String(".no.such.Message")
	for _, c := range []struct {
		name  string
		paths []string
		want  []string
	}{
		{"missing file", []string{filepath.Join(dir, "nope.binpb")}, []string{"descriptor set " + filepath.Join(dir, "nope.binpb"), "no such file"}},
		{"not a set", []string{write("module.yaml", []byte("endpoints:\n  - functions: a/*\n"))},
			[]string{"descriptor set " + filepath.Join(dir, "module.yaml"), "not a FileDescriptorSet"}},
		{"empty", []string{write("empty.binpb", nil)}, []string{"descriptor set " + filepath.Join(dir, "empty.binpb"), "holds no files"}},
		{"unresolvable import", []string{write("alarm.binpb", set(t, alarm()))},
			[]string{"descriptor set " + filepath.Join(dir, "alarm.binpb"), "sensors/v1/alarm.proto imports " + descriptorstest.Path + ", which no descriptor set holds"}},
		{"unresolvable type", []string{write("badtype.binpb", set(t, badType))},
			[]string{"descriptor set " + filepath.Join(dir, "badtype.binpb"), "sensors/v1/alarm.proto", "no.such.Message"}},
		{"conflicting file", []string{reading, write("changed.binpb", set(t, changed))},
			[]string{"descriptor set " + filepath.Join(dir, "changed.binpb"), descriptorstest.Path + " differs from the " + descriptorstest.Path + " of descriptor set " + reading, "conflicting definitions"}},
		{"conflicting name", []string{reading, write("renamed.binpb", set(t, renamed))},
			[]string{"descriptor set " + filepath.Join(dir, "renamed.binpb"), "other/reading.proto defines sensors.v1.Reading, which " + descriptorstest.Path + " of descriptor set " + reading + " defines too", "conflicting definitions"}},
	} {
		_, err := Load(c.paths)
		if err == nil {
			t.Errorf("%s: Load succeeded", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v; want it to say %q", c.name, err, w)
			}
		}
	}
}

// TestBuiltinsWin: a set holding a builtin file of another release does
// not conflict with the builtin.
func TestBuiltinsWin(t *testing.T) {
	old := &descriptorpb.FileDescriptorProto{Name: proto.String("google/protobuf/timestamp.proto"), Package: proto.String("google.protobuf"),
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("Timestamp")}}}
	if _, err := New(Set{Name: "old.binpb", Data: set(t, old, descriptorstest.File())}); err != nil {
		t.Errorf("a set with its own timestamp.proto: %v", err)
	}
}
