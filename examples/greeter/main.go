// Command greeter is the smallest Twinflow application: one function type
// whose instances count the greetings each person received. The README's
// five-minute walk through builds it step by step.
package main

import (
	"flag"
	"fmt"
	"log"

	"github.com/twinflow/twinflow/sdk"
)

// seen counts the greetings each person received; it is kept per address.
var seen = sdk.ValueSpec[int64]{Name: "seen", Type: sdk.Int64Type}

var greeting = sdk.JSONType[string]("greeter/Greeting")

func greet(ctx sdk.Context, msg sdk.Message) error {
	name, err := sdk.As(msg, sdk.StringType)
	if err != nil {
		return sdk.Terminal(err) // a message of the wrong type will never succeed
	}
	n, _, err := seen.Get(ctx)
	if err != nil {
		return err // retryable by default
	}
	n++
	if err := seen.Set(ctx, n); err != nil {
		return err
	}
	return sdk.Egress(ctx, "greetings", greeting, fmt.Sprintf("hello %s, visit %d", name, n))
}

func registry() (*sdk.Registry, error) {
	reg := sdk.NewRegistry()
	if err := reg.Register("greeter/person", sdk.FunctionFunc(greet), seen); err != nil {
		return nil, err
	}
	return reg, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8000", "address to serve the functions on")
	flag.Parse()
	reg, err := registry()
	if err != nil {
		log.Fatal(err)
	}
	// Serve only calls the runtime signed: with the keys in
	// TWINFLOW_VERIFY_KEY, else with the key of the runtime started last
	// on this machine.
	verify, err := sdk.VerifyFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(sdk.NewServer(*listen, sdk.Handler(reg, verify)).ListenAndServe())
}
