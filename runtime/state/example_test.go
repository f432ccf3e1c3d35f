package state_test

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// A shard writes into its overlay and reads through it; at a checkpoint it
// hands the overlay off and the coordinator commits it.
func Example() {
	store, err := state.Open("/data", state.Options{KeyGroups: 128, FS: vfs.NewMem()})
	if err != nil {
		panic(err)
	}
	defer store.Close()

	addr := state.Address{Type: "datacenter/server", ID: "srv-0042"}
	kg := keygroup.Of(addr.ID, store.KeyGroups())

	cur := state.NewOverlay()
	view := state.NewView(store, cur)
	state.PutValue(cur, kg, addr, "temperature", state.Value{Typename: "twinflow/int64", Data: []byte{42}})

	// Checkpoint: hand off cur and keep working in a new overlay.
	handed := cur
	handed.Freeze()
	cur = state.NewOverlay()
	view = state.NewView(store, cur, handed)
	state.DeleteValue(cur, kg, addr, "temperature")
	vals, _, _ := state.ReadAddress(view, kg, addr, 0)
	fmt.Println("after delete:", len(vals))

	// The coordinator commits the handed-off overlay; the shard then drops it.
	if _, err := store.Commit([]*state.Overlay{handed}, nil); err != nil {
		panic(err)
	}
	vals, _, _ = state.ReadAddress(state.NewView(store), kg, addr, 0)
	fmt.Println("committed:", vals["temperature"].Typename, vals["temperature"].Data)
	// Output:
	// after delete: 0
	// committed: twinflow/int64 [42]
}
