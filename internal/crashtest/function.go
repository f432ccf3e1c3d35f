package crashtest

import (
	"fmt"
	"time"

	"github.com/twinflow/twinflow/sdk"
)

// FunctionType is the type of the crash-test function.
const FunctionType = "crash/counter"

// Egress names the exactly-once egress the function writes to, and
// EgressSubject the subject the module spec gives it.
const (
	Egress        = "verify"
	EgressSubject = "crash.verify"
)

// Op kinds of a [Command].
const (
	OpIncrement           = "increment"           // count += 1
	OpSend                = "send"                // send Cmd to To now
	OpSendAfter           = "sendAfter"           // send Cmd to To after DelayMs
	OpSendAfterThenCancel = "sendAfterThenCancel" // send Cmd to To after DelayMs with Token, then cancel it
	OpCancel              = "cancel"              // cancel the delayed message with Token
	OpEgress              = "egress"              // write record EgressID to the egress
)

// Command is the message of crash/counter: ops applied in order by the
// receiving address.
type Command struct {
	ID  string `json:"id"`
	Ops []Op   `json:"ops"`
}

// Op is one step of a [Command].
type Op struct {
	Op      string   `json:"op"`
	To      string   `json:"to,omitempty"`      // receiving address id
	DelayMs int64    `json:"delayMs,omitempty"` // for the delayed sends
	Token   string   `json:"token,omitempty"`   // cancellation token
	Later   bool     `json:"later,omitempty"`   // cancel in a later invocation, through a message to self
	Cmd     *Command `json:"cmd,omitempty"`     // the sub-command sent
	ID      string   `json:"egressId,omitempty"`
}

// Record is an egress record.
type Record struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// Types and state of the function.
var (
	CommandType = sdk.JSONType[Command]("crash/Command")
	RecordType  = sdk.JSONType[Record]("crash/Record")
	// Count is the number of increments applied.
	Count = sdk.ValueSpec[int64]{Name: "count", Type: sdk.Int64Type}
	// Msgs is the number of commands processed.
	Msgs = sdk.ValueSpec[int64]{Name: "msgs", Type: sdk.Int64Type}
)

// Register adds crash/counter to reg.
func Register(reg *sdk.Registry) error {
	return reg.Register(FunctionType, sdk.FunctionFunc(invoke), Count, Msgs)
}

func invoke(ctx sdk.Context, msg sdk.Message) error {
	cmd, err := sdk.As(msg, CommandType)
	if err != nil {
		return sdk.Terminal(err)
	}
	self := ctx.Self()
	to := func(id string) sdk.Address { return sdk.Address{Type: FunctionType, ID: id} }
	var incs int64
	for i, op := range cmd.Ops {
		switch op.Op {
		case OpIncrement:
			incs++
		case OpSend, OpSendAfter, OpSendAfterThenCancel:
			if op.Cmd == nil {
				return sdk.Terminal(fmt.Errorf("command %s op %d: %s without a command", cmd.ID, i, op.Op))
			}
			delay := time.Duration(op.DelayMs) * time.Millisecond
			switch op.Op {
			case OpSend:
				err = sdk.Send(ctx, to(op.To), CommandType, *op.Cmd)
			case OpSendAfter:
				err = sdk.SendAfter(ctx, delay, to(op.To), CommandType, *op.Cmd, "")
			default:
				err = sdk.SendAfter(ctx, delay, to(op.To), CommandType, *op.Cmd, op.Token)
				if err == nil && op.Later {
					err = sdk.Send(ctx, self, CommandType, Command{ID: cmd.ID + "/cancel", Ops: []Op{{Op: OpCancel, Token: op.Token}}})
				} else if err == nil {
					ctx.CancelDelayed(op.Token)
				}
			}
		case OpCancel:
			ctx.CancelDelayed(op.Token)
		case OpEgress:
			err = sdk.Egress(ctx, Egress, RecordType, Record{ID: op.ID, Address: self.ID})
		default:
			return sdk.Terminal(fmt.Errorf("command %s op %d: unknown op %q", cmd.ID, i, op.Op))
		}
		if err != nil {
			return sdk.Terminal(fmt.Errorf("command %s op %d: %w", cmd.ID, i, err))
		}
	}
	n, _, err := Msgs.Get(ctx)
	if err != nil {
		return err
	}
	if err := Msgs.Set(ctx, n+1); err != nil {
		return err
	}
	if incs == 0 {
		return nil
	}
	c, _, err := Count.Get(ctx)
	if err != nil {
		return err
	}
	return Count.Set(ctx, c+incs)
}
