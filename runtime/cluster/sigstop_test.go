package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinflow/twinflow/internal/testwait"
)

// The worker process of TestStoppedWorkerIsFenced: this test binary run
// again with these variables set.
const (
	envHelperURLs    = "TWINFLOW_CLUSTER_HELPER_URLS"
	envHelperCluster = "TWINFLOW_CLUSTER_HELPER_CLUSTER"
)

// TestStoppedWorkerIsFenced stops a worker process with SIGSTOP while it
// commits checkpoints of its key group every 20 ms, lets another worker take
// the key group over (after judging the stopped one dead), and continues
// it with SIGCONT. The stopped worker carries on as if nothing happened:
// every commit it attempts after the takeover is refused by NATS with
// ErrFenced, its membership is lost, and the key group's history holds its
// commits from before the stop, the new owner's, and nothing else.
func TestStoppedWorkerIsFenced(t *testing.T) {
	t.Parallel() // on a cluster of its own, alongside TestOnOneCluster
	e := newEnv(t)
	const name, kg = "stopped", 4
	c := e.open(t, name, 8)
	ctx := testContext(t)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWorker$", "-test.v")
	cmd.Env = append(os.Environ(), envHelperURLs+"="+e.nc.URLs(), envHelperCluster+"="+name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var okBefore, okAfter, fenced int
	var lost string
	resumed := false
	read := func(until func() bool) {
		t.Helper()
		deadline := time.After(time.Minute)
		for !until() {
			select {
			case l, open := <-lines:
				if !open {
					t.Fatal("the worker process ended early")
				}
				switch {
				case strings.HasPrefix(l, "commit ok"):
					if resumed {
						okAfter++
					} else {
						okBefore++
					}
				case strings.HasPrefix(l, "commit fenced"):
					fenced++
				case strings.HasPrefix(l, "lost:"):
					lost = l
				case strings.HasPrefix(l, "error:"):
					t.Fatalf("worker process: %s", l)
				}
			case <-deadline:
				t.Fatalf("waited a minute for the worker process (%d commits, %d fenced)", okBefore+okAfter, fenced)
			}
		}
	}
	read(func() bool { return okBefore >= 5 })
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Commits the stopped process had in flight finish before it stopped
	// or never; what it printed before is counted.
	time.Sleep(100 * time.Millisecond)
	for drained := false; !drained; {
		select {
		case l := <-lines:
			if strings.HasPrefix(l, "commit ok") {
				okBefore++
			}
		default:
			drained = true
		}
	}

	mb := join(t, c, "b")
	var seen Lease
	testwait.For(t, "b to judge the stopped worker dead and plan to take key group 4 over", func() bool {
		for _, l := range PlanFor(8, mb.Self().Holder(), mb.Table()).Acquire {
			if l.KeyGroup == kg {
				seen = l
				return true
			}
		}
		return false
	})
	lb := mustAcquire(t, c, mb, kg, seen)
	storeB := newStore(t, 8)
	ob, st, err := c.Restore(ctx, lb, storeB)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != okBefore {
		t.Fatalf("b restored %d records, the stopped worker had %d commits acknowledged", st.Records, okBefore)
	}
	for id := uint64(1000); id < 1002; id++ {
		if _, err := c.Commit(ctx, id, []Part{{Owned: ob, Changes: changes(counters(kg, 5, "b"))}}); err != nil {
			t.Fatal(err)
		}
	}

	resumed = true
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	read(func() bool { return fenced >= 3 && lost != "" })
	if okAfter != 0 {
		t.Fatalf("the resumed worker committed %d checkpoints after the takeover", okAfter)
	}
	if !strings.Contains(lost, "no longer a member") {
		t.Fatalf("the resumed worker lost its membership with %q, want it judged dead", lost)
	}

	// The history: the stopped worker's commits before the stop, then b's.
	mc := join(t, c, "c")
	_, st, err = c.Restore(ctx, mustAcquire(t, c, mc, kg, lb), newStore(t, 8))
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != okBefore+2 {
		t.Fatalf("the key group's history has %d records, want the stopped worker's %d and b's 2", st.Records, okBefore)
	}
}

// TestHelperWorker is the worker process of TestStoppedWorkerIsFenced: it
// owns key group 4 and commits a checkpoint every 20 ms, printing each
// outcome, until it was fenced three times and lost its membership.
func TestHelperWorker(t *testing.T) {
	urls := os.Getenv(envHelperURLs)
	if urls == "" {
		return // run by TestStoppedWorkerIsFenced only
	}
	if err := helperWorker(urls, os.Getenv(envHelperCluster)); err != nil {
		fmt.Println("error:", err)
	}
}

func helperWorker(urls, name string) error {
	const kg = 4
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx := context.Background()
	c, err := Open(ctx, js, Config{Name: name, KeyGroups: 8, MemberTTL: time.Second})
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := c.Join(ctx, "stopped", "", log)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "twinflow-helper-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := openStore(dir, 8)
	if err != nil {
		return err
	}
	defer store.Close()
	l, err := c.Acquire(ctx, kg, m.Self().Holder(), Lease{KeyGroup: kg})
	if err != nil {
		return err
	}
	o, _, err := c.Restore(ctx, l, store)
	if err != nil {
		return err
	}
	fenced := 0
	for id := uint64(1); ; id++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.Commit(cctx, id, []Part{{Owned: o, Changes: changes(counters(kg, 5, "stopped-"+strconv.FormatUint(id, 10)))}})
		cancel()
		switch {
		case err == nil:
			fmt.Println("commit ok", id)
		case errors.Is(err, ErrFenced):
			fmt.Println("commit fenced", id)
			fenced++
		default:
			return err
		}
		select {
		case <-m.Lost():
			if fenced >= 3 {
				fmt.Println("lost:", m.Err())
				return nil
			}
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
}
