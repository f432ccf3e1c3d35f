// Package sdk is the Go SDK for writing Twinflow functions.
//
// A function is plain Go code over a [Context]: it reads and writes the
// typed state of its address through [ValueSpec] values, and sends messages,
// delayed messages and egress records through the Context. Functions are
// registered in a [Registry] together with the state they declare, and
// [Handler] serves the registry to the Twinflow runtime over Connect.
//
//	var count = sdk.ValueSpec[int64]{Name: "count", Type: sdk.Int64Type}
//
//	reg := sdk.NewRegistry()
//	err := reg.Register("example/counter", sdk.FunctionFunc(func(ctx sdk.Context, msg sdk.Message) error {
//		n, _, err := count.Get(ctx)
//		if err != nil {
//			return err
//		}
//		return count.Set(ctx, n+1)
//	}), count)
//
//	srv := sdk.NewServer(":8000", sdk.Handler(reg)) // HTTP/1.1 and h2c
//	err = srv.ListenAndServe()
//
// The runtime ships the state of an address with every call and applies the
// returned effects atomically, so a function keeps nothing in memory between
// calls: an endpoint can be restarted or scaled out at any time.
//
// # Failures
//
// Errors returned by a function are retryable unless wrapped with
// [Terminal]. A retryable error makes the runtime retry the batch with
// backoff; a terminal one sends it to the dead-letter subject and the
// address goes on with its next messages. Either way none of the batch's
// effects apply, and the other addresses of the same call are unaffected.
//
// The SDK decides the kind in three cases:
//   - a panic in a function is recovered and becomes a terminal error with
//     the panic value and a stack trace: retrying the same message would
//     panic again, and the SDK logs nothing, so the dead letter is where
//     the trace can be read;
//   - misuse of the [Context] that has no error result to report it (an
//     invalid address, typename, delay, token or egress name) is terminal
//     for the same reason;
//   - a message for a function type the endpoint does not serve is
//     terminal.
//
// A state value whose typename differs from its spec makes [ValueSpec.Get]
// fail, naming both typenames. Returned as is, that error is retryable,
// which gives the operator time to roll back a deployment that changed a
// state's type.
//
// # Verifying the runtime
//
// The runtime signs every call with its Ed25519 key (see [SignatureHeader]).
// A handler given the runtime's public key serves only the calls the
// runtime signed, and refuses others before decoding them:
//
//	verify, err := sdk.VerifyFromEnv() // TWINFLOW_VERIFY_KEY, else the local runtime's key
//	srv := sdk.NewServer(":8000", sdk.Handler(reg, verify))
//
// Without a key a handler serves anyone who reaches it.
//
// The package [github.com/twinflow/twinflow/sdk/sdktest] runs functions in
// unit tests without a runtime.
package sdk
