#!/usr/bin/env bash
# Runs the data-center digital twin (examples/datacenter) on one machine:
# the function endpoint, a Twinflow worker with an embedded NATS server, and
# the simulator with a small data center and a few injected faults. Then it
# prints the alerts as they happen. Ctrl-C stops everything cleanly.
#
#   make build && deploy/run-example.sh
#
# Settings (environment):
#   DATA       data directory (default: a new temporary directory, removed at exit)
#   NATS_PORT  port of the embedded NATS server (default 4222)
#   ADMIN      admin API listen address (default 127.0.0.1:8090)
#   RACKS, SERVERS, INTERVAL   the simulated data center (default 4 racks of 8
#              servers, one report per server per second)
#   FAULTS     the fault schedule, kind:target@time,... (see examples/datacenter/sim)
#   ALERTS     how to print the alerts: "decoded" (default; bin/simulator -watch,
#              one readable line each) or "tail" (bin/twinflow tail datacenter.alerts,
#              the raw records: protobuf the CLI does not know prints as base64)
#
# The function endpoint listens on 127.0.0.1:8000, as deploy/datacenter/module.yaml says.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=./bin
MODULE=deploy/datacenter/module.yaml
ENDPOINT=127.0.0.1:8000
NATS_PORT=${NATS_PORT:-4222}
ADMIN=${ADMIN:-127.0.0.1:8090}
RACKS=${RACKS:-4}
SERVERS=${SERVERS:-8}
INTERVAL=${INTERVAL:-1s}
ALERTS=${ALERTS:-decoded}
# The switch of rack-2 fails at 10s, the disk of server 3 of rack-1 at 15s,
# server 5 of rack-0 dies at 20s (NO_REPORTS 30s later). The disk is
# replaced at 30s (its alert resolves two minutes after the last error), the
# switch at 60s, and the dead server comes back at 90s.
FAULTS=${FAULTS:-tor:rack-2@10s,disk:rack-1/srv-3@15s,dead:rack-0/srv-5@20s,clear:rack-1/srv-3@30s,clear:rack-2@60s,clear:rack-0/srv-5@90s}

for b in twinflow datacenter-functions simulator; do
	if [[ ! -x $BIN/$b ]]; then
		echo "$BIN/$b is missing: run make build first" >&2
		exit 1
	fi
done

if [[ -n ${DATA:-} ]]; then
	KEEP_DATA=1
	mkdir -p "$DATA"
else
	KEEP_DATA=
	DATA=$(mktemp -d "${TMPDIR:-/tmp}/twinflow-example.XXXXXX")
fi
LOGS=$DATA/logs
mkdir -p "$LOGS"

export TWINFLOW_NATS=nats://127.0.0.1:$NATS_PORT
export TWINFLOW_ADMIN=http://$ADMIN
# The client commands and the simulator find the runtime, and its client
# credentials and admin token, through its data dir.
export TWINFLOW_DATA=$DATA/twinflow
export TWINFLOW_CREDS=$TWINFLOW_DATA/secrets/client.nk
export TWINFLOW_INBOX_PREFIX=_INBOX_client

# Background processes are started with job control on (set -m), which
# gives each its own process group: Ctrl-C then reaches only this script,
# which stops the others in order: the simulator first, then the worker
# (its final checkpoint still needs the endpoint), then the endpoint.
# Without it they would all stop at once.

FN_PID= TF_PID= SIM_PID= TAIL_PID=
stopping=
cleanup() {
	[[ -n $stopping ]] && return
	stopping=1
	trap - INT TERM
	echo
	echo "stopping..."
	for pid in "$TAIL_PID" "$SIM_PID"; do
		[[ -n $pid ]] && kill "$pid" 2>/dev/null || true
	done
	if [[ -n $TF_PID ]] && kill -0 "$TF_PID" 2>/dev/null; then
		if ! "$BIN/twinflow" stop; then
			kill "$TF_PID" 2>/dev/null || true
		fi
		wait "$TF_PID" 2>/dev/null || true
	fi
	[[ -n $FN_PID ]] && kill "$FN_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	if [[ -z $KEEP_DATA ]]; then
		rm -rf "$DATA"
	else
		echo "data and logs kept in $DATA"
	fi
	echo "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# listening URL: whether something accepts connections on the URL's host
# and port (bash's /dev/tcp, so that nothing else needs installing).
listening() {
	local hp=${1#*://}
	hp=${hp%%/*}
	(exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}") 2>/dev/null
}

# wait_for URL PID NAME LOG: waits up to a minute for URL's port to accept
# connections while the process PID lives.
wait_for() {
	local url=$1 pid=$2 name=$3 log=$4
	for _ in $(seq 1 120); do
		if listening "$url"; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "$name exited; its log ($log):" >&2
			tail -n 30 "$log" >&2
			return 1
		fi
		sleep 0.5
	done
	echo "$name did not answer on $url within a minute; see $log" >&2
	return 1
}

echo "data directory: $DATA"

# The runtime's key pair is made first, so that the endpoint serves only
# the calls the runtime signs with it.
TWINFLOW_VERIFY_KEY=$("$BIN/twinflow" keys --data "$TWINFLOW_DATA")
export TWINFLOW_VERIFY_KEY

set -m
"$BIN/datacenter-functions" -listen "$ENDPOINT" >"$LOGS/functions.log" 2>&1 &
FN_PID=$!
set +m
wait_for "http://$ENDPOINT/" "$FN_PID" "the function endpoint" "$LOGS/functions.log"

set -m
"$BIN/twinflow" run -config "$MODULE" -data "$DATA/twinflow" -nats-port "$NATS_PORT" -admin "$ADMIN" \
	>"$LOGS/twinflow.log" 2>&1 &
TF_PID=$!
set +m
wait_for "http://$ADMIN/healthz" "$TF_PID" "twinflow run" "$LOGS/twinflow.log"

# The simulator's log goes to a file; its fault injections and problems
# also to the terminal, next to the alerts they cause.
set -m
"$BIN/simulator" -racks "$RACKS" -servers "$SERVERS" -interval "$INTERVAL" -fault "$FAULTS" \
	2> >(tee "$LOGS/simulator.log" | grep --line-buffered -E 'fault injected|level=(WARN|ERROR)' >&2) &
SIM_PID=$!
set +m

cat <<EOF

The data-center twin is running: $RACKS racks of $SERVERS servers, one report each per $INTERVAL.
  function endpoint  http://$ENDPOINT                (log: $LOGS/functions.log)
  twinflow admin     $TWINFLOW_ADMIN           (log: $LOGS/twinflow.log)
  metrics            $TWINFLOW_ADMIN/metrics
  NATS               $TWINFLOW_NATS
  faults             $FAULTS

In another terminal (the commands find this runtime: it is the one started last):
  bin/twinflow request datacenter/datacenter dc --typename proto/datacenter.v1.GetUnhealthyRacks --data ''
  bin/twinflow state get datacenter/server srv-2-0
  bin/twinflow state get datacenter/rack rack-2
  bin/twinflow state get datacenter/datacenter dc
  bin/simulator -unhealthy dc       # the same question, the answer decoded
  bin/twinflow tail datacenter.alerts   # the raw alert records

Alerts on datacenter.alerts (Ctrl-C stops everything):
EOF

set -m
if [[ $ALERTS == tail ]]; then
	"$BIN/twinflow" tail datacenter.alerts &
else
	"$BIN/simulator" -watch &
fi
TAIL_PID=$!
set +m
# Wait until a process ends (wait -n needs bash 4.3; older ones wait for
# the tail). The trap turns Ctrl-C into a clean stop.
if ((BASH_VERSINFO[0] > 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] >= 3))); then
	wait -n || true
else
	wait "$TAIL_PID" || true
fi
