#!/usr/bin/env bash
# Relay benchmark: messages/s and round-trip latency through the relay vs
# straight to an API stub, and the server's memory per idle relay.
#
#   bash bench/relay.sh [MESSAGES] [IDLE_COUNTS]
#   PIN=1 bash bench/relay.sh [MESSAGES] [IDLE_COUNTS]
#
# PIN=1 is the one-core arrangement: the relay (our server) on cpu0, the
# stub and the client on cpu1 (SERVER_CPU and LOAD_CPU choose other cores),
# with 1 KiB messages. MESSAGE_BYTES sets the flood's message size (200 by
# default, 1024 with PIN=1).
#
# OURS_BINARY runs another build of ours. BASELINE_BINARY also runs an
# earlier build, in front of the same stub, and floods through it in the same
# alternating rounds (relay / base: after / before). FORWARDER=1 also runs
# socat, a plain TCP forwarder, in front of the stub on the relay's core, and
# floods through it too: the most any relay on that core can reach, since it
# copies bytes and parses nothing (tcp forwarder / direct; relay / tcp forwarder).
#
# Defaults: a 200,000-message flood; idle relays at 1000 and 9900 (10,000
# relays need 20,000 sockets in the server, past a 20,000 open-files hard
# limit: set IDLE_COUNTS=1000,10000 where the limit allows).
set -euo pipefail
cd "$(dirname "$0")/.."

PIN=${PIN:-0}
if [ "$PIN" = 1 ]; then
  export MESSAGE_BYTES=${MESSAGE_BYTES:-1024}
  server_cpu=(taskset -c "${SERVER_CPU:-0}")
  load_cpu=(taskset -c "${LOAD_CPU:-1}")
else
  export MESSAGE_BYTES=${MESSAGE_BYTES:-200}
  server_cpu=()
  load_cpu=()
fi
messages=${1:-200000}
idle_counts=${2:-1000,9900}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
stub_port=${STUB_PORT:-$(free_port)}
server_port=${SERVER_PORT:-$(free_port)}
OURS_BINARY=${OURS_BINARY:-target/release/oauth-consumer-server}
BASELINE_BINARY=${BASELINE_BINARY:-}

# Each idle relay holds two sockets in the server, one in the client, one in the stub.
ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet --bin oauth-consumer-server --example bench_relay

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

"${load_cpu[@]}" target/release/examples/bench_relay stub "127.0.0.1:$stub_port" &
pids+=($!)
# Starts build $1 of ours on port $2; sets started_pid.
start_ours() {
  PORT=$2 HOST=127.0.0.1 APP_URL="http://127.0.0.1:$2/" \
    API_HOST="http://127.0.0.1:$stub_port" \
    OAUTH_CONSUMER_KEY=bench OAUTH_CONSUMER_SECRET=bench-secret \
    RELAY_MAX_PER_CALLER=100000 RELAYS_PER_OWNER=100000 MAX_CONNECTIONS=100000 RUST_LOG=warn \
    "${server_cpu[@]}" "$1" &
  started_pid=$!
  pids+=("$started_pid")
  for _ in $(seq 50); do
    curl -fs "http://127.0.0.1:$2/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nothing answers on port $2" >&2
  exit 1
}

start_ours "$OURS_BINARY" "$server_port"
server_pid=$started_pid
if [ -n "$BASELINE_BINARY" ]; then
  base_port=$(free_port)
  start_ours "$BASELINE_BINARY" "$base_port"
  export BASELINE_SERVER="http://127.0.0.1:$base_port" BASELINE_PID=$started_pid
fi

if [ "${FORWARDER:-0}" = 1 ]; then
  command -v socat >/dev/null || { echo "FORWARDER=1 needs socat (apt-get install socat)" >&2; exit 1; }
  forwarder_port=$(free_port)
  "${server_cpu[@]}" socat -b 65536 "TCP-LISTEN:$forwarder_port,fork,reuseaddr,nodelay" "TCP:127.0.0.1:$stub_port,nodelay" &
  pids+=($!)
  export FORWARDER_URL="http://127.0.0.1:$forwarder_port"
fi

if [ "$PIN" = 1 ]; then
  echo "one-core arrangement: the relay on cpu${SERVER_CPU:-0}; the stub and the client on cpu${LOAD_CPU:-1}"
fi
"${load_cpu[@]}" target/release/examples/bench_relay run "http://127.0.0.1:$server_port" \
  "http://127.0.0.1:$stub_port" "$server_pid" "$messages" "$idle_counts"
