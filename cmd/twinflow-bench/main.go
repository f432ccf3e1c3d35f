// Command twinflow-bench is Twinflow's end-to-end benchmark: it runs the
// runtime in this process and a counter function endpoint in a child
// process, and measures processing and end-to-end throughput, latency,
// checkpoints and memory in both ingress durability modes. See package
// internal/bench, and docs/benchmarks.md for results.
//
//	twinflow-bench [-scenarios processing,e2e,latency,memory] [-modes fsync,default] [-json FILE]
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/twinflow/twinflow/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
