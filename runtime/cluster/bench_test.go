package cluster

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/twinflow/twinflow/runtime/cluster/clustertest"
	"github.com/twinflow/twinflow/runtime/keygroup"
	"github.com/twinflow/twinflow/runtime/state"
)

// The benchmarks run against a three-server cluster of processes on this
// machine, R3, with every write fsynced (sync_interval: always) unless
// TWINFLOW_BENCH_NOSYNC is set. Their results are in docs/benchmarks.md.
//
//	go test -run '^$' -bench . -benchtime 50x ./runtime/cluster/

// benchAddresses and benchChanged are the realistic change set: 10,000
// addresses with a small counter each, 1,000 of them changed per
// checkpoint.
const (
	benchAddresses = 10_000
	benchChanged   = 1_000
	benchK         = 128
)

type benchEnv struct {
	c     *Cluster
	m     *Membership
	store *state.Store
}

func newBenchEnv(b *testing.B, name string) *benchEnv {
	b.Helper()
	nc := clustertest.StartWith(b, clustertest.Options{SyncAlways: os.Getenv("TWINFLOW_BENCH_NOSYNC") == ""})
	_, js := nc.Connect(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Open(ctx, js, Config{Name: name, KeyGroups: benchK})
	if err != nil {
		b.Fatal(err)
	}
	m, err := c.Join(ctx, "bench", "", testLog)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Leave(context.Background()) })
	s, err := state.Open(b.TempDir(), state.Options{KeyGroups: benchK})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return &benchEnv{c: c, m: m, store: s}
}

func (e *benchEnv) own(b *testing.B, kg int) *Owned {
	b.Helper()
	ctx := context.Background()
	l, err := e.c.Acquire(ctx, kg, e.m.Self().Holder(), Lease{KeyGroup: kg})
	if err != nil {
		b.Fatal(err)
	}
	o, _, err := e.c.Restore(ctx, l, e.store)
	if err != nil {
		b.Fatal(err)
	}
	return o
}

// counterOverlay writes the counters of addresses [from, from+n) with
// value v, as a function's state would be written: datacenter/server
// addresses, state "seen", a twinflow/int64 value. kgOf places them.
func counterOverlay(from, n, v int, kgOf func(id string) int) *state.Overlay {
	o := state.NewOverlay()
	for i := from; i < from+n; i++ {
		id := fmt.Sprintf("srv-%05d", i%benchAddresses)
		state.PutValue(o, kgOf(id), state.Address{Type: "datacenter/server", ID: id}, "seen",
			state.Value{Typename: "twinflow/int64", Data: []byte(strconv.Itoa(v))})
	}
	o.Freeze()
	return o
}

// wireBytes is what a message costs on the wire to the server: subject,
// headers and payload (the PUB/HPUB line aside).
func wireBytes(subject string, h nats.Header, data []byte) int {
	n := len(subject) + len(data) + len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}

// rawBytes is the size of the entries of o's key group kg before
// compression: the record format without S2.
func rawBytes(o *state.Overlay, kg int) int {
	n := 0
	for k, v := range o.KeyGroup(kg) {
		n += uvarintSize(len(k)-2) + len(k) - 2 + uvarintSize(len(v)+1) + len(v)
	}
	return n
}

func uvarintSize(x int) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// BenchmarkCheckpoint commits checkpoints of the realistic change set, the
// 10,000 addresses spread over 128 key groups all owned by one worker (a
// batch of a record per key group), and reports the bytes sent to NATS per
// checkpoint.
func BenchmarkCheckpoint(b *testing.B) {
	e := newBenchEnv(b, "bench-ckpt")
	owned := make([]*Owned, benchK)
	for kg := range benchK {
		owned[kg] = e.own(b, kg)
	}
	kgOf := func(id string) int { return keygroup.Of(id, benchK) }
	ctx := context.Background()
	commit := func(id uint64, o *state.Overlay) CommitStats {
		var parts []Part
		for kg := range benchK {
			for range o.KeyGroup(kg) {
				parts = append(parts, Part{Owned: owned[kg], Changes: o.KeyGroup(kg)})
				break
			}
		}
		st, err := e.c.Commit(ctx, id, parts)
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	commit(1, counterOverlay(0, benchAddresses, 0, kgOf)) // every address exists
	overlays := make([]*state.Overlay, 10)
	for i := range overlays {
		overlays[i] = counterOverlay(i*benchChanged, benchChanged, i+1, kgOf)
	}
	raw := 0
	for kg := range benchK {
		raw += rawBytes(overlays[0], kg)
	}
	b.ResetTimer()
	var st CommitStats
	for i := range b.N {
		st = commit(uint64(i+2), overlays[i%len(overlays)])
	}
	b.StopTimer()
	b.ReportMetric(float64(st.Messages), "msgs/ckpt")
	b.ReportMetric(float64(raw), "raw-B/ckpt")
	b.ReportMetric(float64(st.Bytes), "payload-B/ckpt")
	b.ReportMetric(float64(st.Bytes)+float64(st.Messages*headerBytes(owned[0])), "wire-B/ckpt")
}

// headerBytes is what a changelog message of o costs besides its payload:
// its subject and headers as a commit sends them (the batch's own headers
// included; the expected sequence is on the first message of each key
// group, here counted on every message).
func headerBytes(o *Owned) int {
	m := o.message(kindCheckpoint, nil)
	m.Header.Set(hdrCheckpoint, "1234567")
	m.Header.Set(hdrChunk, "1/1")
	m.Header.Set(hdrPrev, "12345678")
	m.Header.Set("Nats-Batch-Id", "ABCDEFGHIJKLMNOPQRSTUV")
	m.Header.Set("Nats-Batch-Sequence", "100")
	m.Header.Set("Nats-Expected-Last-Subject-Sequence", "12345678")
	return wireBytes(m.Subject, m.Header, nil)
}

// BenchmarkCommitOneKeyGroup commits the realistic change set of one key
// group holding all 10,000 addresses: one message per checkpoint.
func BenchmarkCommitOneKeyGroup(b *testing.B) {
	e := newBenchEnv(b, "bench-one")
	o := e.own(b, 7)
	ctx := context.Background()
	at7 := func(string) int { return 7 }
	if _, err := e.c.Commit(ctx, 1, []Part{{Owned: o, Changes: counterOverlay(0, benchAddresses, 0, at7).KeyGroup(7)}}); err != nil {
		b.Fatal(err)
	}
	overlays := make([]*state.Overlay, 10)
	for i := range overlays {
		overlays[i] = counterOverlay(i*benchChanged, benchChanged, i+1, at7)
	}
	b.ResetTimer()
	var st CommitStats
	for i := range b.N {
		var err error
		st, err = e.c.Commit(ctx, uint64(i+2), []Part{{Owned: o, Changes: overlays[i%len(overlays)].KeyGroup(7)}})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(rawBytes(overlays[0], 7)), "raw-B/ckpt")
	b.ReportMetric(float64(st.Bytes), "payload-B/ckpt")
}

// BenchmarkCommitThroughput commits checkpoints of 10 MB: the 10,000
// addresses over 128 key groups with a value of 1 KiB of random bytes each
// (incompressible), a batch of about 140 messages. It shows the bytes per
// second the changelog takes.
func BenchmarkCommitThroughput(b *testing.B) {
	e := newBenchEnv(b, "bench-throughput")
	owned := make([]*Owned, benchK)
	for kg := range benchK {
		owned[kg] = e.own(b, kg)
	}
	r := rand.New(rand.NewPCG(1, 1))
	o := state.NewOverlay()
	for i := range benchAddresses {
		id := fmt.Sprintf("srv-%05d", i)
		v := make([]byte, 1<<10)
		for j := range v {
			v[j] = byte(r.Uint32())
		}
		state.PutValue(o, keygroup.Of(id, benchK), state.Address{Type: "datacenter/server", ID: id}, "window",
			state.Value{Typename: "twinflow/bytes", Data: v})
	}
	o.Freeze()
	parts := make([]Part, benchK)
	for kg := range benchK {
		parts[kg] = Part{Owned: owned[kg], Changes: o.KeyGroup(kg)}
	}
	ctx := context.Background()
	b.ResetTimer()
	var st CommitStats
	for i := range b.N {
		var err error
		if st, err = e.c.Commit(ctx, uint64(i+1), parts); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(st.Messages), "msgs/ckpt")
	b.ReportMetric(float64(st.Bytes)*float64(b.N)/b.Elapsed().Seconds()/1e6, "payload-MB/s")
}

// BenchmarkCommitSmall commits one key group's checkpoint of 10 changes: the
// rate of commits when their size does not matter.
func BenchmarkCommitSmall(b *testing.B) {
	e := newBenchEnv(b, "bench-small")
	o := e.own(b, 3)
	ctx := context.Background()
	at3 := func(string) int { return 3 }
	ov := counterOverlay(0, 10, 1, at3)
	b.ResetTimer()
	for i := range b.N {
		if _, err := e.c.Commit(ctx, uint64(i+1), []Part{{Owned: o, Changes: ov.KeyGroup(3)}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestore restores a key group of 10,000 addresses into an empty
// store, from a snapshot alone, and from a snapshot and 10 checkpoints of
// 1,000 changes after it.
func BenchmarkRestore(b *testing.B) {
	for _, records := range []int{0, 10} {
		b.Run(fmt.Sprintf("snapshot+%d-records", records), func(b *testing.B) {
			e := newBenchEnv(b, fmt.Sprintf("bench-restore-%d", records))
			const kg = 9
			o := e.own(b, kg)
			ctx := context.Background()
			at := func(string) int { return kg }
			ov := counterOverlay(0, benchAddresses, 0, at)
			if _, err := e.c.Commit(ctx, 1, []Part{{Owned: o, Changes: ov.KeyGroup(kg)}}); err != nil {
				b.Fatal(err)
			}
			pos := state.NewOverlay()
			state.PutPosition(pos, kg, state.Position{Seq: o.Head(), Epoch: o.Epoch()})
			pos.Freeze()
			if _, err := e.store.Commit([]*state.Overlay{ov, pos}, nil); err != nil {
				b.Fatal(err)
			}
			info, err := e.c.Snapshot(ctx, o, e.store)
			if err != nil {
				b.Fatal(err)
			}
			for i := range records {
				ch := counterOverlay(i*benchChanged, benchChanged, i+1, at)
				if _, err := e.c.Commit(ctx, uint64(i+2), []Part{{Owned: o, Changes: ch.KeyGroup(kg)}}); err != nil {
					b.Fatal(err)
				}
			}
			lease := o.Lease()
			b.ResetTimer()
			var st RestoreStats
			took := make([]time.Duration, 0, b.N)
			for i := range b.N {
				b.StopTimer()
				fresh, err := state.Open(b.TempDir(), state.Options{KeyGroups: benchK})
				if err != nil {
					b.Fatal(err)
				}
				lease, err = e.c.Acquire(ctx, kg, Holder{"bench", strconv.Itoa(i)}, lease)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				_, st, err = e.c.Restore(ctx, lease, fresh)
				if err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
				b.StopTimer()
				_ = fresh.Close()
				b.StartTimer()
			}
			b.StopTimer()
			if st.SnapshotEntries != benchAddresses || st.Records != records {
				b.Fatalf("restore %+v: want %d entries from the snapshot and %d records", st, benchAddresses, records)
			}
			b.ReportMetric(float64(info.Bytes), "snapshot-B")
			b.ReportMetric(float64(st.RecordBytes), "changelog-B")
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
		})
	}
}

// BenchmarkEncodeRecord encodes one key group's share of the realistic
// checkpoint: 8 of its counters changed (1,000 over 128 key groups).
func BenchmarkEncodeRecord(b *testing.B) {
	o := counterOverlay(0, 8, 1, func(string) int { return 5 })
	b.ReportAllocs()
	for range b.N {
		if _, _, err := encodeRecord(5, o.KeyGroup(5)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRecord decodes a key group's record of 1,000 changed
// counters, as a restore does.
func BenchmarkDecodeRecord(b *testing.B) {
	o := counterOverlay(0, benchChanged, 1, func(string) int { return 5 })
	data, _, err := encodeRecord(5, o.KeyGroup(5))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for range b.N {
		if _, err := decodeRecord(bytes.NewReader(data), 5, func(k, v []byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestoreShare restores a worker's share of a cluster of three:
// 43 of the 128 key groups, holding 10,000 addresses between them, each
// with 10 checkpoints of changes in its changelog and no snapshot. This is
// the restore part of a failover; the key groups are restored one at a
// time, or 8 at a time.
func BenchmarkRestoreShare(b *testing.B) {
	const share = 43
	e := newBenchEnv(b, "bench-share")
	owned := make([]*Owned, share)
	for kg := range share {
		owned[kg] = e.own(b, kg)
	}
	// The addresses of the first 43 key groups: 10,000 of them.
	var ids []string
	for i := 0; len(ids) < benchAddresses; i++ {
		id := fmt.Sprintf("srv-%06d", i)
		if keygroup.Of(id, benchK) < share {
			ids = append(ids, id)
		}
	}
	ctx := context.Background()
	for ckpt := range 10 {
		o := state.NewOverlay()
		for i, id := range ids {
			if ckpt == 0 || i%10 == ckpt {
				state.PutValue(o, keygroup.Of(id, benchK), state.Address{Type: "datacenter/server", ID: id}, "seen",
					state.Value{Typename: "twinflow/int64", Data: []byte(strconv.Itoa(ckpt))})
			}
		}
		o.Freeze()
		parts := make([]Part, share)
		for kg := range share {
			parts[kg] = Part{Owned: owned[kg], Changes: o.KeyGroup(kg)}
		}
		if _, err := e.c.Commit(ctx, uint64(ckpt+1), parts); err != nil {
			b.Fatal(err)
		}
	}
	leases := make([]Lease, share)
	for kg := range share {
		leases[kg] = owned[kg].Lease()
	}
	for _, parallel := range []int{1, 8} {
		b.Run(fmt.Sprintf("parallel=%d", parallel), func(b *testing.B) {
			for i := range b.N {
				b.StopTimer()
				fresh, err := state.Open(b.TempDir(), state.Options{KeyGroups: benchK})
				if err != nil {
					b.Fatal(err)
				}
				for kg := range share {
					if leases[kg], err = e.c.Acquire(ctx, kg, Holder{"share", fmt.Sprint(parallel, "-", i)}, leases[kg]); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				sem := make(chan struct{}, parallel)
				errs := make(chan error, share)
				for kg := range share {
					sem <- struct{}{}
					go func() {
						defer func() { <-sem }()
						_, _, err := e.c.Restore(ctx, leases[kg], fresh)
						errs <- err
					}()
				}
				for range share {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				_ = fresh.Close()
				b.StartTimer()
			}
		})
	}
}
