package datacenter_test

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	datacenterv1 "github.com/twinflow/twinflow/examples/datacenter/gen/datacenter/v1"
	"github.com/twinflow/twinflow/runtime/descriptors"
	"github.com/twinflow/twinflow/runtime/spec"
	"github.com/twinflow/twinflow/runtime/typedjson"
)

// TestModuleDescriptors: every module spec of the example lists the
// example's descriptor set, which describes every message of its protos,
// so that the runtime renders them as the generated code does.
func TestModuleDescriptors(t *testing.T) {
	specs, err := filepath.Glob("../../deploy/datacenter/*.yaml")
	if err != nil || len(specs) == 0 {
		t.Fatalf("no module specs in deploy/datacenter (%v)", err)
	}
	report, err := proto.Marshal(healthy("srv-1-3", "rack-1", t0))
	if err != nil {
		t.Fatal(err)
	}
	want, err := protojson.Marshal(healthy("srv-1-3", "rack-1", t0))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range specs {
		m, err := spec.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		types, err := descriptors.Load(m.Descriptors)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		msgs := datacenterv1.File_datacenter_v1_datacenter_proto.Messages()
		for i := range msgs.Len() {
			if _, err := types.Types().FindMessageByName(msgs.Get(i).FullName()); err != nil {
				t.Errorf("%s: the descriptors do not describe %s", path, msgs.Get(i).FullName())
			}
		}
		got, ok := typedjson.New(types.Types()).Render("proto/datacenter.v1.ServerMetricReport", report)
		if !ok || !sameJSON(t, got, string(want)) {
			t.Errorf("%s: a ServerMetricReport renders as %s, %v; want %s", path, got, ok, want)
		}
	}
}

func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		return false
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}
