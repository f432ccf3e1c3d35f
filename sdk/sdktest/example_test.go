package sdktest_test

import (
	"fmt"

	"github.com/twinflow/twinflow/sdk"
	"github.com/twinflow/twinflow/sdk/sdktest"
)

var greetings = sdk.ValueSpec[int64]{Name: "greetings", Type: sdk.Int64Type}

// greeter answers a name with a numbered greeting, to the request's reply
// subject when there is one and to the caller otherwise.
func greeter(ctx sdk.Context, msg sdk.Message) error {
	who, err := sdk.As(msg, sdk.StringType)
	if err != nil {
		return sdk.Terminal(err)
	}
	n, _, err := greetings.Get(ctx)
	if err != nil {
		return err
	}
	n++
	if err := greetings.Set(ctx, n); err != nil {
		return err
	}
	text := fmt.Sprintf("hello %s, greeting #%d", who, n)
	if msg.ReplyTo() != "" {
		return sdk.Reply(ctx, sdk.StringType, text)
	}
	if caller, ok := ctx.Caller(); ok {
		return sdk.Send(ctx, caller, sdk.StringType, text)
	}
	return nil
}

func ExampleHarness() {
	reg := sdk.NewRegistry()
	if err := reg.Register("example/greeter", sdk.FunctionFunc(greeter), greetings); err != nil {
		fmt.Println(err)
		return
	}
	h := sdktest.New(reg)
	self := sdk.Address{Type: "example/greeter", ID: "g"}
	name, _ := sdk.Encode(sdk.StringType, "Ada")

	res, err := h.Invoke(self, name, sdktest.WithReplyTo("_INBOX.1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range res.Replies {
		fmt.Printf("reply to %s: %s\n", r.ReplyTo, r.Value.Bytes)
	}

	res, err = h.Invoke(self, name, sdktest.WithCaller(sdk.Address{Type: "example/user", ID: "ada"}))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range res.Sent {
		fmt.Printf("to %s: %s\n", m.To, m.Value.Bytes)
	}

	n, ok, err := sdktest.StateOf(h, self, greetings)
	fmt.Println(n, ok, err)
	// Output:
	// reply to _INBOX.1: "hello Ada, greeting #1"
	// to example/user/ada: "hello Ada, greeting #2"
	// 2 true <nil>
}
