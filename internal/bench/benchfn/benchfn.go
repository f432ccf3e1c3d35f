// Package benchfn is the benchmark's function endpoint: a keyed counter
// written with the SDK. Each message adds one to its address's count (a
// request is answered with the new count), and does what its flags say (see package workload): send the message on to
// another address, write it to the exactly-once egress. The endpoint also
// records the time from each message's publication (stamped in the
// payload by the driver) to its invocation, and serves it as JSON.
package benchfn

import (
	"encoding/json"
	"net/http"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinflow/twinflow/internal/bench/workload"
	"github.com/twinflow/twinflow/sdk"
)

var count = sdk.ValueSpec[int64]{Name: workload.CountState, Type: sdk.Int64Type}

// Stats is what the endpoint measured since its last reset.
type Stats struct {
	invocations atomic.Uint64
	latency     workload.Histogram // publish → invocation, direct messages only
}

// StatsJSON is the body of GET /stats.
type StatsJSON struct {
	Invocations uint64            `json:"invocations"`
	Latency     workload.Snapshot `json:"latency"`
}

// Register adds the counter function to reg; it records into st.
func Register(reg *sdk.Registry, st *Stats) error {
	return reg.Register(workload.FunctionType, sdk.FunctionFunc(func(ctx sdk.Context, msg sdk.Message) error {
		return invoke(ctx, msg, st)
	}), count)
}

func invoke(ctx sdk.Context, msg sdk.Message, st *Stats) error {
	now := time.Now()
	st.invocations.Add(1)
	m, err := workload.Parse(msg.Bytes())
	if err != nil {
		return sdk.Terminal(err)
	}
	if m.Published > 0 && m.Flags&workload.FlagForwarded == 0 {
		st.latency.Record(now.Sub(time.Unix(0, m.Published)))
	}
	n, _, err := count.Get(ctx)
	if err != nil {
		return err
	}
	if err := count.Set(ctx, n+1); err != nil {
		return err
	}
	if msg.ReplyTo() != "" {
		// A request is answered with the address's new count.
		if err := sdk.Reply(ctx, sdk.Int64Type, n+1); err != nil {
			return err
		}
	}
	if m.Flags&workload.FlagSend != 0 {
		ctx.Send(sdk.Address{Type: workload.FunctionType, ID: m.SendTo},
			sdk.TypedValue{Typename: workload.Typename, Bytes: workload.Forwarded(msg.Bytes())})
	}
	if m.Flags&workload.FlagEgress != 0 {
		ctx.Egress(workload.Egress, sdk.TypedValue{Typename: workload.Typename, Bytes: msg.Bytes()})
	}
	return nil
}

// Handler serves the function under sdk.HandlerPath, GET /stats, POST
// /reset, which clears the stats, and POST and DELETE /profile?file=PATH,
// which start and stop a CPU profile of the endpoint into PATH.
func Handler(reg *sdk.Registry, st *Stats) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(sdk.HandlerPath, sdk.Handler(reg))
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(StatsJSON{Invocations: st.invocations.Load(), Latency: st.latency.Snapshot()})
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) {
		st.invocations.Store(0)
		st.latency.Reset()
	})
	var prof struct {
		sync.Mutex
		f *os.File
	}
	mux.HandleFunc("POST /profile", func(w http.ResponseWriter, r *http.Request) {
		prof.Lock()
		defer prof.Unlock()
		if prof.f != nil {
			http.Error(w, "a profile is running", http.StatusConflict)
			return
		}
		f, err := os.Create(r.URL.Query().Get("file"))
		if err == nil {
			if err = pprof.StartCPUProfile(f); err != nil {
				_ = f.Close()
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		prof.f = f
	})
	mux.HandleFunc("DELETE /profile", func(w http.ResponseWriter, _ *http.Request) {
		prof.Lock()
		defer prof.Unlock()
		if prof.f != nil {
			pprof.StopCPUProfile()
			_ = prof.f.Close()
			prof.f = nil
		}
	})
	return mux
}
