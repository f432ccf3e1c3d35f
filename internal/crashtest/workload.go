package crashtest

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Delays of the delayed messages a workload sends.
const (
	// MaxDelay bounds the delay of a delayed message that is not
	// cancelled, or is cancelled in the invocation that sent it.
	MaxDelay = time.Second
	// LateCancelDelay is the delay of a delayed message cancelled in a
	// later invocation: longer than any test runs. Delayed messages run on
	// the wall clock, time down included, and the cancel, a message the
	// sender sends itself, waits behind the sender's backlog, crashes and
	// restarts; a delay that those could outlast would let the message fire
	// before its cancel, as the platform allows. The tests check instead
	// that no delayed message is left pending once every command has run.
	LateCancelDelay = time.Hour
)

// Options shape a workload. Zero values take the defaults.
type Options struct {
	Addresses int // distinct addresses; default 200
	Commands  int // commands published to the ingress; default 3000
	MaxDepth  int // nesting of sub-commands; default 3
	MaxOps    int // ops per command; default 4
	// Prefix starts the command ids (and so the egress ids), so that
	// workloads published to one deployment do not collide; default "c".
	Prefix string
	// NoLateCancels leaves out cancels sent in a later invocation, and the
	// messages to self that carry them.
	NoLateCancels bool
}

func (o *Options) setDefaults() {
	if o.Addresses <= 0 {
		o.Addresses = 200
	}
	if o.Commands <= 0 {
		o.Commands = 3000
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = 3
	}
	if o.MaxOps <= 0 {
		o.MaxOps = 4
	}
	if o.Prefix == "" {
		o.Prefix = "c"
	}
}

// Ingress is a command published to an address through the ingress.
type Ingress struct {
	To  string
	Cmd Command
}

// Workload is a generated run and the outcome exactly-once processing
// must produce.
type Workload struct {
	Seed      uint64
	Addresses []string
	Commands  []Ingress

	// Count and Msgs are the final values of the states of each address
	// (absent means zero).
	Count map[string]int64
	Msgs  map[string]int64
	// Egress holds the ids of the egress records, each to be published
	// once; Cancelled those of records only cancelled messages would write.
	Egress    map[string]bool
	Cancelled map[string]bool
	// Ops counts the ops generated, by kind (late cancels as
	// "sendAfterThenCancel/later").
	Ops map[string]int
}

// Messages is the number of commands the addresses process in all.
func (w *Workload) Messages() int64 {
	var n int64
	for _, m := range w.Msgs {
		n += m
	}
	return n
}

// Generate draws a workload from seed.
func Generate(seed uint64, o Options) *Workload {
	o.setDefaults()
	g := &gen{
		o:   o,
		rng: rand.New(rand.NewPCG(seed, 0x5eed)),
		w: &Workload{
			Seed: seed, Count: map[string]int64{}, Msgs: map[string]int64{},
			Egress: map[string]bool{}, Cancelled: map[string]bool{}, Ops: map[string]int{},
		},
	}
	for i := range o.Addresses {
		g.w.Addresses = append(g.w.Addresses, fmt.Sprintf("a%03d", i))
	}
	for i := range o.Commands {
		to := g.address()
		g.w.Commands = append(g.w.Commands, Ingress{To: to, Cmd: *g.command(fmt.Sprintf("%s%d", o.Prefix, i), to, 0)})
	}
	return g.w
}

type gen struct {
	o   Options
	rng *rand.Rand
	w   *Workload
}

func (g *gen) address() string { return g.w.Addresses[g.rng.IntN(len(g.w.Addresses))] }

// command draws the command id that address at receives, and adds its
// outcome to the model.
func (g *gen) command(id, at string, depth int) *Command {
	g.w.Msgs[at]++
	cmd := &Command{ID: id}
	nested := depth < g.o.MaxDepth
	for i := range 1 + g.rng.IntN(g.o.MaxOps) {
		opID := fmt.Sprintf("%s.%d", id, i)
		var op Op
		switch r := g.rng.IntN(100); {
		case r < 35:
			op = Op{Op: OpIncrement}
			g.w.Count[at]++
		case r < 55 && nested:
			to := g.address()
			op = Op{Op: OpSend, To: to, Cmd: g.command(opID, to, depth+1)}
		case r < 67 && nested:
			to := g.address()
			delay := g.rng.Int64N(MaxDelay.Milliseconds() + 1)
			op = Op{Op: OpSendAfter, To: to, DelayMs: delay, Cmd: g.command(opID, to, depth+1)}
		case r < 80:
			// The cancelled message would increment and write an egress
			// record: both must never happen.
			op = Op{Op: OpSendAfterThenCancel, To: g.address(), Token: "t-" + opID, Cmd: &Command{
				ID:  opID + "!",
				Ops: []Op{{Op: OpIncrement}, {Op: OpEgress, ID: "x-" + opID}},
			}}
			g.w.Cancelled["x-"+opID] = true
			if !g.o.NoLateCancels && g.rng.IntN(2) == 0 {
				op.Later = true
				op.DelayMs = LateCancelDelay.Milliseconds()
				g.w.Msgs[at]++ // the cancel it sends itself
				g.w.Ops[OpSendAfterThenCancel+"/later"]++
			} else {
				op.DelayMs = g.rng.Int64N(MaxDelay.Milliseconds() + 1)
			}
		default:
			op = Op{Op: OpEgress, ID: "e-" + opID}
			g.w.Egress[op.ID] = true
		}
		g.w.Ops[op.Op]++
		cmd.Ops = append(cmd.Ops, op)
	}
	return cmd
}
