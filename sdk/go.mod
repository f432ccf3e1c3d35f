module github.com/twinflow/twinflow/sdk

go 1.25.0

require (
	connectrpc.com/connect v1.19.1
	github.com/twinflow/twinflow/proto v0.0.0-00010101000000-000000000000
	google.golang.org/protobuf v1.36.12
)

// Until a release of the proto module is tagged, the SDK builds against the
// one beside it. A module that uses the SDK needs the same replace
// directives (or the go.work of this repository).
replace github.com/twinflow/twinflow/proto => ../proto
