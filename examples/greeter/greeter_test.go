package main

import (
	"testing"

	"github.com/twinflow/twinflow/sdk"
	"github.com/twinflow/twinflow/sdk/sdktest"
)

func TestGreetCountsVisits(t *testing.T) {
	reg, err := registry()
	if err != nil {
		t.Fatal(err)
	}
	h := sdktest.New(reg)
	ada := sdk.Address{Type: "greeter/person", ID: "ada"}
	msg, _ := sdk.Encode(sdk.StringType, "ada")
	for want := int64(1); want <= 2; want++ {
		res, err := h.Invoke(ada, msg)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Egress) != 1 {
			t.Fatalf("egress = %v, want one greeting", res.Egress)
		}
		n, _, err := sdktest.StateOf(h, ada, seen)
		if err != nil || n != want {
			t.Fatalf("seen = %d, %v; want %d", n, err, want)
		}
	}
	if _, err := h.Invoke(ada, sdk.TypedValue{Typename: "greeter/Other", Bytes: []byte("{}")}); err == nil {
		t.Fatal("a message of the wrong type succeeded")
	}
}
