package crashtest

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twinflow/twinflow/router"
	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/spec"
	"github.com/twinflow/twinflow/sdk"
)

// inProcessConfig is an engine with its embedded NATS server on a free
// port, calling the crash function served in-process at url.
func inProcessConfig(t *testing.T, dataDir, url string) runtime.Config {
	return runtime.Config{
		DataDir:            dataDir,
		NATSPort:           -1,
		NATSSyncInterval:   time.Minute,
		AdminAddr:          "127.0.0.1:0",
		Shards:             2,
		KeyGroups:          16,
		CheckpointInterval: 50 * time.Millisecond,
		Memory:             runtime.Memory{Total: 256 << 20},
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
		Module: &spec.Module{
			Endpoints: []spec.Endpoint{{Functions: "crash/*", URL: url, Timeout: 5 * time.Second,
				MaxBatchAddresses: 64, MaxBatchMessages: 64, MaxInFlight: 4}},
			Egresses: []router.EgressRule{{Name: Egress, Subject: EgressSubject, Delivery: router.ExactlyOnce}},
		},
	}
}

// serveFunction serves crash/counter on loopback.
func serveFunction(t *testing.T) string {
	t.Helper()
	reg := sdk.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sdk.Handler(reg))
	t.Cleanup(srv.Close)
	return srv.URL
}

// runWorkload publishes w to an in-process engine and waits until every
// address has its model state.
func runWorkload(t *testing.T, e *runtime.Engine, adminURL string, w *Workload) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d := newDriver(t, e.Access(), log)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.publish(ctx, w.Commands); err != nil {
		t.Fatal(err)
	}
	admin := adminClient(adminURL, e.Access().DataDir)
	var diff []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		got, err := readStates(ctx, admin, w.Addresses)
		if err != nil {
			t.Fatal(err)
		}
		if diff = diffStates(w, got); len(diff) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("states never matched the model:\n%s", summarize(diff, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// copyDir copies a directory tree of regular files.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// stateFiles lists the names in a data dir's state directory.
func stateFiles(t *testing.T, dataDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// flipBytes inverts 16 bytes of a file starting at off.
func flipBytes(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off+16 > len(b) {
		t.Fatalf("%s has %d bytes, too few to corrupt at %d", path, len(b), off)
	}
	for i := off; i < off+16; i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedCheckpointFiles damages the Pebble files of a data dir that
// holds checkpoints, and checks that the engine refuses to start with an
// error naming the file, instead of restoring an empty or older state, and
// leaves the files as they were.
func TestDamagedCheckpointFiles(t *testing.T) {
	url := serveFunction(t)
	w := Generate(7, Options{Addresses: 20, Commands: 300})

	// A data dir whose checkpoints are in tables: after the first run
	// they are in Pebble's WAL; a second start flushes the WAL into a
	// table, and its stop leaves it there.
	prepared := t.TempDir()
	e, err := runtime.Start(context.Background(), inProcessConfig(t, prepared, url))
	if err != nil {
		t.Fatal(err)
	}
	runWorkload(t, e, e.AdminURL(), w)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Stop(ctx, ""); err != nil {
		t.Fatal(err)
	}
	e, err = runtime.Start(context.Background(), inProcessConfig(t, prepared, url))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Stop(ctx, ""); err != nil {
		t.Fatal(err)
	}
	files := stateFiles(t, prepared)
	var table, manifest, marker string
	for _, n := range files {
		switch {
		case strings.HasSuffix(n, ".sst") && table == "":
			table = n
		case strings.HasPrefix(n, "marker.manifest."):
			marker = n
			manifest = n[strings.LastIndex(n, ".")+1:]
		}
	}
	if table == "" || manifest == "" {
		t.Fatalf("the prepared data dir has no table or no current MANIFEST: %v", files)
	}
	t.Logf("state files: %v", files)

	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, stateDir string)
		want   string // in the error
	}{
		{"table missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, table)); err != nil {
				t.Fatal(err)
			}
		}, table},
		{"table corrupt", func(t *testing.T, dir string) {
			flipBytes(t, filepath.Join(dir, table), 40)
		}, table},
		{"table truncated", func(t *testing.T, dir string) {
			path := filepath.Join(dir, table)
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, st.Size()-100); err != nil {
				t.Fatal(err)
			}
		}, table},
		{"MANIFEST missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, manifest)); err != nil {
				t.Fatal(err)
			}
		}, manifest},
		{"MANIFEST corrupt", func(t *testing.T, dir string) {
			flipBytes(t, filepath.Join(dir, manifest), 20)
		}, manifest},
		{"MANIFEST marker missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, marker)); err != nil {
				t.Fatal(err)
			}
		}, "marker.manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			copyDir(t, prepared, dataDir)
			stateDir := filepath.Join(dataDir, "state")
			tc.damage(t, stateDir)
			before := stateFiles(t, dataDir)
			e, err := runtime.Start(context.Background(), inProcessConfig(t, dataDir, url))
			if err == nil {
				e.Kill()
				t.Fatalf("the engine started on a data dir with a damaged %s", tc.want)
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("the error does not name %s: %v", tc.want, err)
			}
			if after := stateFiles(t, dataDir); !slices.Equal(before, after) {
				t.Errorf("the failed start changed the state files:\nbefore %v\nafter  %v", before, after)
			}
		})
	}

	// The undamaged copy restores every address's state.
	t.Run("intact", func(t *testing.T) {
		dataDir := t.TempDir()
		copyDir(t, prepared, dataDir)
		e, err := runtime.Start(context.Background(), inProcessConfig(t, dataDir, url))
		if err != nil {
			t.Fatal(err)
		}
		defer e.Kill()
		got, err := readStates(ctx, adminClient(e.AdminURL(), e.Access().DataDir), w.Addresses)
		if err != nil {
			t.Fatal(err)
		}
		if diff := diffStates(w, got); len(diff) > 0 {
			t.Fatalf("restored states differ from the model:\n%s", summarize(diff, 20))
		}
	})
}
