package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/twinflow/twinflow/client"
	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime/runinfo"
)

// A program sends a message and waits until it is durable, repeating it
// with its key while the error is temporary, then calls the function. Its
// goroutines may do the same concurrently: the client writes what they
// send together.
func Example() {
	ctx := context.Background()
	info, err := runinfo.Current() // the runtime `twinflow run` started last
	if err != nil {
		log.Fatal(err)
	}
	nc, _, err := info.ConnectNATS("my-service", nil) // as the client identity
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c, err := client.New(nc, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(ctx)

	ada := router.Address{Type: "greeter/person", ID: "ada"} // the greeter of the README's walk-through
	for {
		_, err := c.Send(ctx, ada, "twinflow/string", []byte(`"ada"`), client.WithKey("hello-ada-1"))
		var ce *client.Error
		if err == nil || !errors.As(err, &ce) || !ce.Temporary() {
			break
		}
		// Not stored, or not known to be: the same key again is applied once.
		time.Sleep(100 * time.Millisecond)
	}

	_, reply, err := c.Call(ctx, ada, "twinflow/string", []byte(`"ada"`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(reply))
}
