package frontdoor

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// Replies waits for the answers to calls, for the HTTP/Connect door and for
// package client. Each call gets an inbox of its own under one
// subscription: <prefix>.<random>.N, where prefix is an inbox prefix only
// its owner may read (the runtime's, or a client identity's) and random is
// drawn once, so that no other sender can name a call's inbox as the reply
// subject of its own request.
type Replies struct {
	base string // "<prefix>.<random>."
	sub  *nats.Subscription
	next atomic.Uint64
	mu   struct {
		sync.Mutex
		waiting map[uint64]chan *nats.Msg
	}
}

// NewReplies subscribes to the inboxes of calls under prefix on nc.
func NewReplies(nc *nats.Conn, prefix string) (*Replies, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	r := &Replies{base: prefix + "." + hex.EncodeToString(b) + "."}
	r.mu.waiting = map[uint64]chan *nats.Msg{}
	sub, err := nc.Subscribe(r.base+"*", r.deliver)
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	r.sub = sub
	return r, nil
}

// Open returns a new inbox, the channel its first answer arrives on, and
// the function that stops waiting.
func (r *Replies) Open() (inbox string, answer <-chan *nats.Msg, done func()) {
	n := r.next.Add(1)
	ch := make(chan *nats.Msg, 1)
	r.mu.Lock()
	r.mu.waiting[n] = ch
	r.mu.Unlock()
	return r.base + strconv.FormatUint(n, 10), ch, func() {
		r.mu.Lock()
		delete(r.mu.waiting, n)
		r.mu.Unlock()
	}
}

// deliver hands an answer to its call, if one waits for it.
func (r *Replies) deliver(m *nats.Msg) {
	n, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, r.base), 10, 64)
	if err != nil {
		return
	}
	r.mu.Lock()
	ch := r.mu.waiting[n]
	delete(r.mu.waiting, n)
	r.mu.Unlock()
	if ch != nil {
		ch <- m
	}
}

// Close stops waiting for answers.
func (r *Replies) Close() { _ = r.sub.Unsubscribe() }
