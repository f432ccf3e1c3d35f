package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twinflow/twinflow/runtime/cluster"
)

// clusterUsage lists the cluster commands.
const clusterUsage = `usage:
  twinflow cluster status -cluster NAME [-nats URLS] [-v]
  twinflow cluster drain -cluster NAME [-nats URLS] [-undo] [-wait DURATION] WORKER`

// clusterCmd runs twinflow cluster status and drain: they read and mark
// the cluster in its NATS resources, without any worker.
func clusterCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || (args[0] != "status" && args[0] != "drain") {
		return errors.New(clusterUsage)
	}
	fs := flag.NewFlagSet("cluster "+args[0], flag.ContinueOnError)
	var tf targetFlags
	tf.addNATS(fs)
	name := fs.String("cluster", os.Getenv("TWINFLOW_CLUSTER"), "name of the cluster (default $TWINFLOW_CLUSTER)")
	verbose := fs.Bool("v", false, "status: list every key group: owner, epoch, changelog head, snapshot")
	undo := fs.Bool("undo", false, "drain: count the worker in the assignment again")
	wait := fs.Duration("wait", 2*time.Minute, "drain: how long to wait for the worker to hand its key groups over (0: do not wait)")
	rest, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if *name == "" {
		return fmt.Errorf("twinflow cluster %s needs -cluster NAME, the name the workers were started with (twinflow run -cluster NAME)", args[0])
	}
	if args[0] == "drain" && len(rest) != 1 {
		return errors.New("twinflow cluster drain needs the id of one worker (twinflow cluster status lists them)\n" + clusterUsage)
	}
	t, err := tf.resolve()
	if err != nil {
		return err
	}
	nc, js, err := t.connectNATS("twinflow-cluster-" + args[0])
	if err != nil {
		return err
	}
	defer nc.Close()
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := cluster.Attach(actx, js, *name)
	if err != nil {
		return err
	}
	if args[0] == "drain" {
		return drainWorker(ctx, c, rest[0], *undo, *wait, out)
	}
	st, err := c.Status(actx)
	if err != nil {
		return err
	}
	printClusterStatus(out, st, time.Now(), *verbose)
	return nil
}

// drainWorker marks a worker drained (or undrained) and waits, reporting
// progress every second, until it holds no key group.
func drainWorker(ctx context.Context, c *cluster.Cluster, worker string, undo bool, wait time.Duration, out io.Writer) error {
	if undo {
		if err := c.Undrain(ctx, worker); err != nil {
			return err
		}
		fmt.Fprintf(out, "worker %s counts in the assignment again: it takes its share of key groups back\n", worker)
		return nil
	}
	if err := c.Drain(ctx, worker); err != nil {
		return err
	}
	fmt.Fprintf(out, "worker %s drained: it hands its key groups to the others (undo with twinflow cluster drain -undo %s)\n", worker, worker)
	if wait <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	for {
		st, err := c.Status(ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s to hand its key groups over: %w", worker, err)
		}
		held, member := 0, false
		for _, m := range st.Members {
			if m.Worker == worker {
				held, member = len(m.KeyGroups), true
			}
		}
		if held == 0 {
			state := "holds no key group"
			if !member {
				state = "is not a member"
			}
			fmt.Fprintf(out, "worker %s %s (%s); it may be stopped\n", worker, state, time.Since(start).Round(100*time.Millisecond))
			return nil
		}
		fmt.Fprintf(out, "worker %s still holds %d key groups\n", worker, held)
		select {
		case <-ctx.Done():
			return fmt.Errorf("worker %s still holds %d key groups after %v: is it running and a member? (twinflow cluster status)", worker, held, wait)
		case <-time.After(time.Second):
		}
	}
}

func printClusterStatus(out io.Writer, st cluster.Status, now time.Time, verbose bool) {
	held := 0
	for _, g := range st.Groups {
		if !g.Holder.IsZero() {
			held++
		}
	}
	fmt.Fprintf(out, "cluster %s: %d key groups, %d held, %d workers\n\n", st.Name, st.KeyGroups, held, len(st.Members))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tINCARNATION\tADDRESS\tSTARTED\tHEARTBEAT\tKEY GROUPS\tASSIGNED\tLAST CHECKPOINT\tLAG")
	var drained []string
	for _, m := range st.Members {
		last := "-"
		if m.LastCheckpoint > 0 {
			last = fmt.Sprintf("%d (%s ago)", m.LastCheckpoint, ago(now, m.LastCheckpointAt))
		}
		if m.Draining {
			drained = append(drained, m.Worker)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\t%d\t%d\t%s\t%s\n", m.Worker, m.Incarnation, m.Address,
			m.Started.Local().Format(time.DateTime), ago(now, m.LastHeartbeat), len(m.KeyGroups), m.Assigned, last, lagOf(m.Lag))
	}
	_ = tw.Flush()
	if len(drained) > 0 {
		fmt.Fprintf(out, "\ndrained: %s\n", strings.Join(drained, ", "))
	}
	var moving []string
	for _, g := range st.Groups {
		if g.Holder.Worker != g.Assigned {
			moving = append(moving, fmt.Sprintf("%d (%s -> %s)", g.KeyGroup, orNone(g.Holder.Worker), g.Assigned))
		}
	}
	if len(moving) > 0 {
		fmt.Fprintf(out, "\nmoving: %s\n", strings.Join(moving, ", "))
	}
	if !verbose {
		return
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY GROUP\tOWNER\tEPOCH\tHEAD\tLAST ELEMENT\tSNAPSHOT\tROUTED")
	for _, g := range st.Groups {
		head := "-"
		if g.Head > 0 {
			head = g.HeadKind
			if g.HeadCheckpoint > 0 {
				head += fmt.Sprintf(" %d", g.HeadCheckpoint)
			}
			head += fmt.Sprintf(", %s ago", ago(now, g.HeadAt))
		}
		snap := "-"
		if g.Snapshot.Object != "" {
			snap = fmt.Sprintf("at %d, %d bytes, %s ago", g.Snapshot.Seq, g.Snapshot.Bytes, ago(now, g.Snapshot.Taken))
		}
		routed := "-"
		if g.Routed >= 0 {
			routed = strconv.FormatInt(g.Routed, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\t%s\t%s\n", g.KeyGroup, orNone(g.Holder.String()), g.Epoch, g.Head, head, snap, routed)
	}
	_ = tw.Flush()
}

// lagOf sums the messages a worker's readers had not read; "-" before
// its heartbeats carry any.
func lagOf(lag map[string]uint64) string {
	if lag == nil {
		return "-"
	}
	var n uint64
	for _, l := range lag {
		n += l
	}
	return strconv.FormatUint(n, 10)
}

func orNone(s string) string {
	if s == "" || s == "/" {
		return "none"
	}
	return s
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "?"
	}
	return now.Sub(t).Round(100 * time.Millisecond).String()
}
