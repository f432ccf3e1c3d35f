package natsbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamSpec describes a JetStream stream that [EnsureStream] creates or
// updates.
type StreamSpec struct {
	// Name is the stream name. Required.
	Name string
	// Subjects are the subjects (wildcards allowed) the stream captures.
	Subjects []string
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Id values to
	// drop repeated publishes. Default: the server's (2 minutes).
	DuplicateWindow time.Duration
	// MaxBytes caps the stream size; 0 means unlimited.
	MaxBytes int64
	// MaxAge removes messages older than this; 0 means never.
	MaxAge time.Duration
	// Discard says what happens at MaxBytes: jetstream.DiscardOld (the zero
	// value) drops the oldest messages, jetstream.DiscardNew rejects new
	// publishes. An ingress stream whose readers must not miss messages
	// wants DiscardNew, which turns a full stream into publisher errors.
	Discard jetstream.DiscardPolicy
	// Storage is jetstream.FileStorage (the zero value) or
	// jetstream.MemoryStorage.
	Storage jetstream.StorageType
	// Replicas is the number of replicas in a cluster. Default 1.
	Replicas int
	// AllowDirect lets clients read stored messages by sequence or subject
	// ($JS.API.DIRECT.GET.<stream>) without creating a consumer: a read
	// that creates nothing, so a client may be given it alone.
	AllowDirect bool
}

// EnsureStream creates the stream, or updates an existing one to match spec.
// Calling it again with the same spec changes nothing. Some changes (the
// storage type, for one) are refused by JetStream and returned as errors.
func EnsureStream(ctx context.Context, js jetstream.JetStream, spec StreamSpec) (jetstream.Stream, error) {
	if spec.Name == "" {
		return nil, errors.New("natsbus: StreamSpec.Name is required")
	}
	cfg := jetstream.StreamConfig{
		Name:        spec.Name,
		Subjects:    spec.Subjects,
		Retention:   jetstream.LimitsPolicy,
		Discard:     spec.Discard,
		MaxBytes:    spec.MaxBytes,
		MaxAge:      spec.MaxAge,
		MaxMsgs:     -1,
		Storage:     spec.Storage,
		Replicas:    spec.Replicas,
		Duplicates:  spec.DuplicateWindow,
		AllowDirect: spec.AllowDirect,
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = -1
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("natsbus: ensure stream %s: %w", spec.Name, err)
	}
	return s, nil
}
