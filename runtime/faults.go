package runtime

import (
	"fmt"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinflow/twinflow/runtime/state"
)

// A full disk and failed writes, as the engine handles them (the store's
// side is in runtime/state/disk.go):
//
//   - While the state store cannot write (DiskFull), checkpoints are retried
//     by the coordinator, the ingress readers take in nothing more, queries
//     are answered, and everything resumes once space returns.
//   - When the store fails for good (Pebble cannot continue after a failed
//     write), or the embedded NATS server cannot write its store (a single
//     JetStream server refuses every later write to that stream until it
//     restarts), the engine stops by itself and Err says why; twinflow run
//     exits with it. Nothing acknowledged is lost: messages acknowledged by
//     JetStream are on disk, and the restart resumes from the last complete
//     checkpoint.

// Err returns why the engine stopped, or is stopping, by itself; nil while
// it runs normally or after a stop that was asked for.
func (e *Engine) Err() error {
	select {
	case <-e.failed:
		return e.failErr
	default:
		return nil
	}
}

// DiskFull returns why the state store cannot write now, nil when it can,
// for example "disk full at DIR/state: cannot commit a checkpoint: 12.0 MiB
// free, 80.0 MiB needed (...)". Intake pauses while it is not nil.
func (e *Engine) DiskFull() error {
	if full := e.store.DiskFull(); full != nil {
		return full
	}
	return nil
}

// fail records that the engine cannot continue; watchFailures stops it.
// A failure while it starts makes Start fail.
func (e *Engine) fail(err error) {
	e.failOnce.Do(func() {
		e.failErr = err
		e.log.Error("stopping: the runtime cannot continue", "err", err)
		close(e.failed)
	})
}

// watchFailures stops the engine when the store fails or fail is called.
func (e *Engine) watchFailures() {
	select {
	case <-e.store.Failed():
		e.fail(e.store.Err())
	case <-e.failed:
	case <-e.stopped:
		return
	}
	e.shutdown()
}

// natsStoreFailure says what to do when the embedded server could not write
// its store at dir.
func natsStoreFailure(dir string, err error) error {
	free := ""
	if u, uerr := vfs.Default.GetDiskUsage(dir); uerr == nil {
		free = fmt.Sprintf(" (%s free)", state.FormatBytes(u.AvailBytes))
	}
	return fmt.Errorf("the embedded NATS server could not write its store at %s%s: %v; JetStream refuses further writes to that stream "+
		"until the server restarts: free space if the disk is full, then start twinflow again (acknowledged messages are on disk)", dir, free, err)
}

// registerDisk exports the free space of the data dir's file systems and
// whether the store waits for space.
func (e *Engine) registerDisk() {
	free := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "twinflow_disk_free_bytes", Help: "Space available on the file system of a part of the data dir (state, nats)."}, []string{"dir"})
	dirs := map[string]vfs.FS{"state": e.cfg.StateFS}
	if e.cfg.NATSURL == "" {
		dirs["nats"] = vfs.Default
	}
	collector := &diskCollector{free: free, dataDir: e.cfg.DataDir, dirs: dirs}
	full := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "twinflow_state_disk_full",
		Help: "1 while the state store cannot write for lack of disk space: checkpoints wait and intake is paused."},
		func() float64 {
			if e.store.DiskFull() != nil {
				return 1
			}
			return 0
		})
	e.reg.MustRegister(collector, full)
}

// diskCollector reads the free space when /metrics is scraped.
type diskCollector struct {
	free    *prometheus.GaugeVec
	dataDir string
	dirs    map[string]vfs.FS
}

func (c *diskCollector) Describe(ch chan<- *prometheus.Desc) { c.free.Describe(ch) }

func (c *diskCollector) Collect(ch chan<- prometheus.Metric) {
	for name, fs := range c.dirs {
		if fs == nil {
			fs = vfs.Default
		}
		// The dir may not exist yet; its file system is its parent's.
		if u, err := fs.GetDiskUsage(filepath.Join(c.dataDir, name)); err == nil {
			c.free.WithLabelValues(name).Set(float64(u.AvailBytes))
		} else if u, err := fs.GetDiskUsage(c.dataDir); err == nil {
			c.free.WithLabelValues(name).Set(float64(u.AvailBytes))
		}
	}
	c.free.Collect(ch)
}
