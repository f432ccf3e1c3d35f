package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	storagev1 "github.com/twinflow/twinflow/proto/gen/twinflow/storage/v1"
	twinflowv1 "github.com/twinflow/twinflow/proto/gen/twinflow/v1"
)

// PutMailbox records the pending inputs and spilled backlogs of key group
// kg for the checkpoint that o is part of. An empty mailbox deletes the
// record.
func PutMailbox(o *Overlay, kg int, m *storagev1.Mailbox) error {
	if len(m.GetPending()) == 0 && len(m.GetSpilled()) == 0 {
		o.Delete(mailboxKey(kg))
		return nil
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("state: mailbox of key group %d: %w", kg, err)
	}
	o.Set(mailboxKey(kg), b)
	return nil
}

// LoadMailbox returns the pending inputs of key group kg, empty when there
// are none.
func LoadMailbox(v View, kg int) (*storagev1.Mailbox, error) {
	m := new(storagev1.Mailbox)
	b, ok, err := v.Get(mailboxKey(kg))
	if err != nil || !ok {
		return m, err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("state: mailbox of key group %d: %w", kg, err)
	}
	return m, nil
}

// SaveSpecs registers state specs of a function type, writing and syncing
// them at once: specs are never renegotiated after a restart. A spec
// replaces the registered one of the same name; others are kept. It
// returns all specs now registered for the type.
func (s *Store) SaveSpecs(functionType string, specs []*twinflowv1.StateSpec) ([]*twinflowv1.StateSpec, error) {
	s.specsMu.Lock()
	defer s.specsMu.Unlock()
	cur, err := s.Specs(functionType)
	if err != nil {
		return nil, err
	}
	changed := false
	for _, spec := range specs {
		i := 0
		for i < len(cur) && cur[i].GetName() != spec.GetName() {
			i++
		}
		if i < len(cur) && proto.Equal(cur[i], spec) {
			continue
		}
		changed = true
		spec = proto.CloneOf(spec)
		if i < len(cur) {
			cur[i] = spec
		} else {
			cur = append(cur, spec)
		}
	}
	if !changed {
		return cur, nil
	}
	b, err := proto.Marshal(&storagev1.StateSpecs{Specs: cur})
	if err != nil {
		return nil, fmt.Errorf("state: specs of %s: %w", functionType, err)
	}
	batch := s.db.NewBatch()
	defer batch.Close()
	_ = batch.Set(metaKey(metaSpecs, []byte(functionType)), b, nil)
	if err := s.write("record state specs", batch); err != nil {
		return nil, fmt.Errorf("state: save specs of %s: %w", functionType, err)
	}
	return cur, nil
}

// Specs returns the state specs registered for a function type.
func (s *Store) Specs(functionType string) ([]*twinflowv1.StateSpec, error) {
	b, ok, err := NewView(s).Get(metaKey(metaSpecs, []byte(functionType)))
	if err != nil || !ok {
		return nil, err
	}
	var m storagev1.StateSpecs
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("state: specs of %s: %w", functionType, err)
	}
	return m.Specs, nil
}

// LoadSpecs returns the state specs registered for every function type.
func (s *Store) LoadSpecs() (map[string][]*twinflowv1.StateSpec, error) {
	out := make(map[string][]*twinflowv1.StateSpec)
	lo, hi := metaBounds(metaSpecs)
	err := NewView(s).Scan(lo, hi, func(key, val []byte) error {
		var m storagev1.StateSpecs
		if err := proto.Unmarshal(val, &m); err != nil {
			return fmt.Errorf("state: specs of %s: %w", key[2:], err)
		}
		out[string(key[2:])] = m.Specs
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PutManifest records a complete checkpoint; commit it in the same batch
// as the checkpoint's overlays.
func PutManifest(o *Overlay, m *storagev1.Manifest) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("state: manifest %d: %w", m.GetId(), err)
	}
	o.Set(manifestKey(m.GetId()), b)
	return nil
}

// DeleteManifest deletes the manifest of checkpoint id, to prune history.
func DeleteManifest(o *Overlay, id uint64) { o.Delete(manifestKey(id)) }

// LatestManifest returns the manifest of the latest complete checkpoint,
// and false when there is none.
func (s *Store) LatestManifest() (*storagev1.Manifest, bool, error) {
	lo, hi := metaBounds(metaManifest)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, false, fmt.Errorf("state: latest manifest: %w", err)
	}
	var m *storagev1.Manifest
	if it.Last() {
		m = new(storagev1.Manifest)
		if err = proto.Unmarshal(it.Value(), m); err != nil {
			err = fmt.Errorf("state: manifest %x: %w", it.Key()[2:], err)
		}
	}
	if err := errors.Join(err, it.Close()); err != nil {
		return nil, false, err
	}
	return m, m != nil, nil
}

// Manifests returns the retained manifests, oldest first.
func (s *Store) Manifests() ([]*storagev1.Manifest, error) {
	var out []*storagev1.Manifest
	lo, hi := metaBounds(metaManifest)
	err := NewView(s).Scan(lo, hi, func(key, val []byte) error {
		m := new(storagev1.Manifest)
		if err := proto.Unmarshal(val, m); err != nil {
			return fmt.Errorf("state: manifest %x: %w", key[2:], err)
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

// PutReaderSequence records the stream sequence an ingress reader reached
// at the checkpoint that o is part of.
func PutReaderSequence(o *Overlay, reader string, seq uint64) {
	o.Set(metaKey(metaReader, []byte(reader)), binary.BigEndian.AppendUint64(nil, seq))
}

// ReaderSequences returns the committed stream sequence of every ingress
// reader, by reader name.
func (s *Store) ReaderSequences() (map[string]uint64, error) {
	out := make(map[string]uint64)
	lo, hi := metaBounds(metaReader)
	err := NewView(s).Scan(lo, hi, func(key, val []byte) error {
		if len(val) != 8 {
			return fmt.Errorf("state: sequence of reader %q is corrupt", key[2:])
		}
		out[string(key[2:])] = binary.BigEndian.Uint64(val)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PutEgress records an egress record for the checkpoint that o is part of.
// It is published after that checkpoint is complete and then deleted with
// [Store.DeleteEgress]. The record's message id must be unique; pending
// records are listed in byte order of their ids.
func PutEgress(o *Overlay, r *storagev1.EgressRecord) error {
	if r.GetMsgId() == "" {
		return errors.New("state: egress record without a message id")
	}
	b, err := proto.Marshal(r)
	if err != nil {
		return fmt.Errorf("state: egress record %s: %w", r.GetMsgId(), err)
	}
	o.Set(metaKey(metaEgress, []byte(r.GetMsgId())), b)
	return nil
}

// PendingEgress returns committed egress records not yet deleted, in order
// of their message ids, starting at the id from ("" for the first) and at
// most limit of them (all when limit <= 0).
func (s *Store) PendingEgress(from string, limit int) ([]*storagev1.EgressRecord, error) {
	lo, hi := metaBounds(metaEgress)
	lo = append(lo, from...)
	var out []*storagev1.EgressRecord
	err := NewView(s).Scan(lo, hi, func(key, val []byte) error {
		if limit > 0 && len(out) == limit {
			return errStop
		}
		r := new(storagev1.EgressRecord)
		if err := proto.Unmarshal(val, r); err != nil {
			return fmt.Errorf("state: egress record %q: %w", key[2:], err)
		}
		out = append(out, r)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	return out, nil
}

// DeleteEgress deletes published egress records by message id, writing and
// syncing at once. Deleting them outside a checkpoint is safe: should the
// deletion be lost, the records are published again with the same ids,
// and JetStream drops the duplicates.
func (s *Store) DeleteEgress(msgIDs ...string) error {
	if len(msgIDs) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, id := range msgIDs {
		_ = b.Delete(metaKey(metaEgress, []byte(id)), nil)
	}
	if err := s.write("delete published egress records", b); err != nil {
		return fmt.Errorf("state: delete %d egress records: %w", len(msgIDs), err)
	}
	return nil
}

func uvarint(x uint64) []byte { return binary.AppendUvarint(nil, x) }

func getUvarint(v View, key []byte) (uint64, bool, error) {
	b, ok, err := v.Get(key)
	if err != nil || !ok {
		return 0, false, err
	}
	x, n := binary.Uvarint(b)
	if n != len(b) {
		return 0, false, fmt.Errorf("state: %q holds %x, not a uvarint", key, b)
	}
	return x, true, nil
}

// unsafeBytes returns the bytes of s without copying; they must not be
// modified.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
