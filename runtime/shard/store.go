package shard

import (
	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// Store is the state of a shard's key groups as its core reads and writes
// it. Writes go into an uncommitted layer; HandOff sets that layer aside
// for a checkpoint and starts a new one, and Committed drops a handed-off
// layer once the checkpoint is durable. Reads see every layer. The core
// never touches files itself: *state.Layers implements Store over Pebble
// (tests open it on Pebble's in-memory file system).
type Store interface {
	// ReadValues returns the values called names of addr, or all of them
	// when names is nil; expired values are left out (and deleted).
	ReadValues(kg int, addr state.Address, names []string, now int64) (map[string]state.Value, error)
	PutValue(kg int, addr state.Address, name string, v state.Value)
	DeleteValue(kg int, addr state.Address, name string)
	// Touch refreshes the values of addr that expire after they are used.
	Touch(kg int, addr state.Address, vals map[string]state.Value, now int64)
	// IndexAddress adds addr to the address index unless it is there; the
	// core calls it after writing a value of an address that may have had
	// none. IndexNewAddress adds it without looking, after the first write
	// of an address read with no state at all. UnindexIfEmpty removes addr
	// from the index when it has no value left; the core calls it after
	// deleting values. Unindexed counts the removals: an address read with
	// state while it returned n is still indexed while it returns n. (The
	// store itself keeps the index for the expired values it deletes.)
	IndexAddress(kg int, addr state.Address) error
	IndexNewAddress(kg int, addr state.Address) error
	UnindexIfEmpty(kg int, addr state.Address) error
	Unindexed() uint64
	// SweepExpired deletes up to limit expired values in r from the key
	// from on, and returns where the next sweep resumes.
	SweepExpired(r keygroup.Range, from []byte, now int64, limit int) ([]byte, error)

	// PutTimer stores a delayed message in its owner's key group kg; one
	// with the token of a pending one replaces it.
	PutTimer(kg int, t *storagev1.Timer) error
	// CancelTimer deletes owner's pending delayed message with token, and
	// reports whether there was one.
	CancelTimer(kg int, owner state.Address, token string) (bool, error)
	// NextTimerDue returns when the earliest delayed message in r is due.
	NextTimerDue(r keygroup.Range) (due int64, ok bool, err error)
	// TakeDueTimers deletes and returns up to limit delayed messages in r
	// due at now, in due order.
	TakeDueTimers(r keygroup.Range, now int64, limit int) ([]*storagev1.Timer, error)

	// LoadMailbox returns key group kg's mailbox snapshot.
	LoadMailbox(kg int) (*storagev1.Mailbox, error)
	// PutSpilled stores message seq of addr's spilled backlog and returns
	// its size as stored.
	PutSpilled(kg int, addr state.Address, seq uint64, p *storagev1.Pending) (int64, error)
	// TakeSpilled deletes and returns up to n messages of addr's spilled
	// backlog from sequence from on, with their size as stored.
	TakeSpilled(kg int, addr state.Address, from uint64, n int) ([]*storagev1.Pending, int64, error)

	// Seen reports whether addr has an unexpired mark for an idempotency
	// key; MarkSeen marks it until expiresAt; SweepSeen deletes expired
	// marks in r from the key from on, and returns where the next sweep
	// resumes.
	Seen(kg int, addr state.Address, key string, now int64) (bool, error)
	MarkSeen(kg int, addr state.Address, key string, expiresAt int64)
	SweepSeen(r keygroup.Range, from []byte, now int64, limit int) ([]byte, error)
	// KeyGroupRestored says that the store's state of key group kg was
	// replaced from elsewhere, so that what the layers know of it (the
	// marks they hold) is read again.
	KeyGroupRestored(kg int)
	// SeenFilterBytes is the memory the layers spend to answer Seen for
	// new keys without reading the store.
	SeenFilterBytes() int64

	// HandOff sets the uncommitted writes aside for a checkpoint and
	// returns them; reads still see them until Committed.
	HandOff() *state.Overlay
	// Committed drops handed-off writes that the store now holds.
	Committed(o *state.Overlay)
	// UncommittedBytes is the memory held by the writes since HandOff.
	UncommittedBytes() int64
	// Close releases what the layers hold of the store.
	Close()
}

var _ Store = (*state.Layers)(nil)
