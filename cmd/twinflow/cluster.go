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

// clusterCmd is twinflow cluster status: the cluster as its NATS resources
// show it, read without any worker.
func clusterCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "status" {
		return errors.New("usage: twinflow cluster status -cluster NAME [-nats URLS] [-v]")
	}
	fs := flag.NewFlagSet("cluster status", flag.ContinueOnError)
	var tf targetFlags
	tf.addNATS(fs)
	name := fs.String("cluster", os.Getenv("TWINFLOW_CLUSTER"), "name of the cluster (default $TWINFLOW_CLUSTER)")
	verbose := fs.Bool("v", false, "list every key group: owner, epoch, changelog head, snapshot")
	if _, err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("twinflow cluster status needs -cluster NAME, the name the workers were started with (twinflow run -cluster NAME)")
	}
	t, err := tf.resolve()
	if err != nil {
		return err
	}
	nc, js, err := t.connectNATS("twinflow-cluster-status")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := cluster.Attach(ctx, js, *name)
	if err != nil {
		return err
	}
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	printClusterStatus(out, st, time.Now(), *verbose)
	return nil
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
	fmt.Fprintln(tw, "WORKER\tINCARNATION\tADDRESS\tSTARTED\tHEARTBEAT\tKEY GROUPS\tASSIGNED\tLAST CHECKPOINT")
	for _, m := range st.Members {
		last := "-"
		if m.LastCheckpoint > 0 {
			last = fmt.Sprintf("%d (%s ago)", m.LastCheckpoint, ago(now, m.LastCheckpointAt))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\t%d\t%d\t%s\n", m.Worker, m.Incarnation, m.Address,
			m.Started.Local().Format(time.DateTime), ago(now, m.LastHeartbeat), len(m.KeyGroups), m.Assigned, last)
	}
	_ = tw.Flush()
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
