// Command benchfn serves the benchmark's counter function (package
// benchfn) for cmd/twinflow-bench, which starts it as its own process. It
// prints its URL on the first line of stdout and exits when stdin closes,
// so it never outlives the driver.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/twinflow/twinflow/internal/bench/benchfn"
	"github.com/twinflow/twinflow/sdk"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	reg := sdk.NewRegistry()
	st := &benchfn.Stats{}
	if err := benchfn.Register(reg, st); err != nil {
		fmt.Fprintln(os.Stderr, "benchfn:", err)
		os.Exit(1)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchfn:", err)
		os.Exit(1)
	}
	srv := sdk.NewServer(*listen, benchfn.Handler(reg, st))
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	fmt.Printf("http://%s\n", l.Addr())
	if err := srv.Serve(l); err != nil {
		fmt.Fprintln(os.Stderr, "benchfn:", err)
		os.Exit(1)
	}
}
