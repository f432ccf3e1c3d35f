// Command crashfn serves the crash-test function crash/counter (see package
// crashtest) over Connect, for the runtime to call:
//
//	crashfn -listen 127.0.0.1:8000
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/twinflow/twinflow/internal/crashtest"
	"github.com/twinflow/twinflow/sdk"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8000", "address to serve the function on")
	flag.Parse()
	reg := sdk.NewRegistry()
	if err := crashtest.Register(reg); err != nil {
		fmt.Fprintln(os.Stderr, "crashfn:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "crashfn serving %s on %s\n", crashtest.FunctionType, *listen)
	if err := sdk.NewServer(*listen, sdk.Handler(reg)).ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "crashfn:", err)
		os.Exit(1)
	}
}
