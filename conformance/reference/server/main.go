// Command server serves the Go reference functions of the conformance
// suite (conformance/reference) as a function endpoint:
//
//	go run ./conformance/reference/server -listen 127.0.0.1:9000 &
//	go run ./conformance -endpoint http://127.0.0.1:9000
//
// It prints the URL it serves on, which tells the port when -listen asks
// for any free one (127.0.0.1:0).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/twinflow/twinflow/conformance/reference"
	"github.com/twinflow/twinflow/sdk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		slog.Error("conformance reference server failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	listen := flag.String("listen", "127.0.0.1:9000", "address to serve the reference functions on")
	flag.Parse()
	reg := sdk.NewRegistry()
	if err := reference.Register(reg); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := sdk.NewServer(*listen, sdk.Handler(reg))
	fmt.Printf("serving the conformance reference functions on http://%s\n", ln.Addr())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
