package runtime_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/internal/testwait"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/spec"
)

// deadLetter publishes a message to the direct ingress without a typename:
// it is dead-lettered with its payload.
func (h *harness) deadLetter(payload []byte) {
	h.t.Helper()
	if _, err := h.js.PublishMsg(context.Background(), &nats.Msg{Subject: "twinflow.in.test.counter.x", Data: payload}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) deadLetterStream() jetstream.StreamInfo {
	h.t.Helper()
	s, err := h.js.Stream(context.Background(), runtime.DeadLetterStream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return *info
}

// TestDeadLetterStreamIsBounded fills the dead-letter stream past its size
// bound: the oldest dead letters go, the stream stays within the bound,
// and /metrics counts what was removed.
func TestDeadLetterStreamIsBounded(t *testing.T) {
	ep := counterRegistry(t)
	cfg := baseConfig(t, ep.url())
	cfg.MaxPayload = 4 << 10
	cfg.Module.DeadLetters = spec.DeadLetters{MaxBytes: 96 << 10}
	h := start(t, cfg)
	info := h.deadLetterStream()
	if c := info.Config; c.MaxBytes != 96<<10 || c.MaxAge != spec.DefaultDeadLetterMaxAge || c.Discard != jetstream.DiscardOld {
		t.Fatalf("dead-letter stream limits: max bytes %d, max age %s, discard %v", c.MaxBytes, c.MaxAge, c.Discard)
	}

	const sent = 100
	payload := []byte(strings.Repeat("x", 3<<10))
	for i := 0; i < sent; i++ {
		h.deadLetter(payload)
	}
	testwait.For(t, "every message dead-lettered", func() bool { return h.metric("twinflow_ingress_dead_letters_total") == sent })
	testwait.For(t, "the dead letters stored or discarded", func() bool {
		return h.metric("twinflow_dead_letters_discarded_total")+h.metric("twinflow_dead_letter_stream_messages") == sent
	})
	info = h.deadLetterStream()
	discarded := h.metric("twinflow_dead_letters_discarded_total")
	t.Logf("stream: %d messages, %d bytes; discarded %v", info.State.Msgs, info.State.Bytes, discarded)
	if info.State.Bytes > 96<<10 || discarded == 0 || info.State.Msgs == 0 {
		t.Errorf("stream holds %d bytes in %d messages with a bound of %d bytes; %v discarded", info.State.Bytes, info.State.Msgs, 96<<10, discarded)
	}
	if float64(info.State.FirstSeq-1) != discarded {
		t.Errorf("discarded %v, but the stream starts at sequence %d", discarded, info.State.FirstSeq)
	}
	if h.metric("twinflow_dead_letter_stream_bytes") != float64(info.State.Bytes) {
		t.Errorf("twinflow_dead_letter_stream_bytes = %v, want %d", h.metric("twinflow_dead_letter_stream_bytes"), info.State.Bytes)
	}
}

// TestDeadLetterStreamAges removes dead letters older than the age bound.
func TestDeadLetterStreamAges(t *testing.T) {
	ep := counterRegistry(t)
	cfg := baseConfig(t, ep.url())
	cfg.Module.DeadLetters = spec.DeadLetters{MaxAge: time.Second}
	h := start(t, cfg)
	h.deadLetter([]byte("x"))
	h.deadLetter([]byte("y"))
	testwait.For(t, "two dead letters stored", func() bool { return h.deadLetterStream().State.LastSeq == 2 })
	testwait.For(t, "the dead letters aged out", func() bool {
		return h.metric("twinflow_dead_letters_discarded_total") == 2 && h.deadLetterStream().State.Msgs == 0
	})
}

// TestDeadLetterBoundTooSmall refuses a size bound that cannot hold a dead
// letter of the largest message.
func TestDeadLetterBoundTooSmall(t *testing.T) {
	cfg := baseConfig(t, "http://127.0.0.1:1")
	cfg.Module.DeadLetters = spec.DeadLetters{MaxBytes: 512 << 10}
	_, err := runtime.Start(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "deadLetters.maxBytes") {
		t.Fatalf("Start with a dead-letter bound below the largest message = %v", err)
	}
}
