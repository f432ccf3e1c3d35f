module github.com/twinflow/twinflow/proto

go 1.25.0

require (
	connectrpc.com/connect v1.19.1
	google.golang.org/protobuf v1.36.12
)
