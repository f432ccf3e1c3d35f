package egress

import (
	"context"
	"fmt"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
)

// Committed is where complete checkpoints keep their exactly-once records
// until they are published.
type Committed interface {
	// PendingEgress lists up to limit records from the message id from on,
	// in publication order.
	PendingEgress(from string, limit int) ([]*storagev1.EgressRecord, error)
	// DeleteEgress forgets published records.
	DeleteEgress(msgIDs ...string) error
}

// Sink publishes records to JetStream and waits until they are stored.
type Sink interface {
	Publish(ctx context.Context, recs []*storagev1.EgressRecord) error
}

// PublishCommitted publishes the records of complete checkpoints in order,
// a page at a time, and forgets each page once JetStream has it.
func PublishCommitted(ctx context.Context, c Committed, pub Sink) error {
	const page = 4096
	for {
		recs, err := c.PendingEgress("", page)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return nil
		}
		if err := pub.Publish(ctx, recs); err != nil {
			return fmt.Errorf("publishing %d egress records: %w", len(recs), err)
		}
		ids := make([]string, len(recs))
		for i, r := range recs {
			ids[i] = r.GetMsgId()
		}
		if err := c.DeleteEgress(ids...); err != nil {
			return err
		}
	}
}
