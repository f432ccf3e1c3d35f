package natsbus_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/twinflow/twinflow/runtime/natsbus"
)

// Publish records with message IDs to a stream on an embedded server, then
// read the stream from after sequence 1.
func Example() {
	dir, _ := os.MkdirTemp("", "natsbus-example")
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.DiscardHandler)

	// One identity, an nkey: the server keeps its public key, the client
	// its seed.
	user, _ := nkeys.CreateUser()
	public, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(dir, "example.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		fmt.Println(err)
		return
	}
	srv, err := natsbus.StartServer(natsbus.ServerOptions{
		Dir: filepath.Join(dir, "nats"), Port: -1, Logger: quiet,
		Users: []natsbus.User{{Name: "example", NKey: public, Unrestricted: true}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown()
	nc, js, err := natsbus.Connect(natsbus.ConnOptions{URL: srv.ClientURL(), CredsFile: seedFile, Name: "example", Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := natsbus.EnsureStream(ctx, js, natsbus.StreamSpec{Name: "INGRESS", Subjects: []string{"in.>"}}); err != nil {
		fmt.Println(err)
		return
	}
	pub := natsbus.NewPublisher(js, natsbus.PublisherOptions{Logger: quiet})
	recs := []natsbus.Record{
		{Subject: "in.a", Data: []byte("one"), MsgID: "1"},
		{Subject: "in.b", Data: []byte("two"), MsgID: "2"},
		{Subject: "in.a", Data: []byte("three"), MsgID: "3", Header: nats.Header{natsbus.ReplyToHeader: {"_INBOX.x"}}},
	}
	for range 2 { // the repeat is dropped by message ID
		if err := pub.Publish(ctx, recs); err != nil {
			fmt.Println(err)
			return
		}
	}

	r, err := natsbus.NewReader(ctx, js, "INGRESS", 1, natsbus.ReaderOptions{Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	for n := 0; n < 2; {
		batch, err := r.Next(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		for _, m := range batch {
			fmt.Printf("%d %s %s reply=%q\n", m.Seq, m.Subject, m.Data, m.Reply)
		}
		n += len(batch)
	}
	// Output:
	// 2 in.b two reply=""
	// 3 in.a three reply="_INBOX.x"
}
