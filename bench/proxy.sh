#!/usr/bin/env bash
# Proxy benchmark, in one go on this machine: a fast upstream stub
# (examples/bench_upstream.rs), our server (release build) in front of it,
# and nginx (`proxy_pass`, Debian's nginx-light) in front of the same stub.
# Each is loaded by wrk with the same threads, connections and duration, in
# alternating rounds. Ours is called two ways, both signed with HMAC-SHA512:
# `cookie`, as a browser does (the session cookie of a login through the
# real dance), and `bearer`, as a service does (a proxy token). Prints
# requests/s, latency percentiles and CPU per request of each, the ratios
# ours/nginx of each round and their medians, and the server's RSS.
#
# PIN=1 is the one-core arrangement: our server and nginx (1 worker) on
# cpu0, wrk, the stub and the latency probe on cpu1 (SERVER_CPU and LOAD_CPU
# choose other cores). It then also measures
# the p99 latency at half of our rate (examples/bench_load.rs, open loop)
# against the stub called directly at the same rate.
#
# Usage: bash bench/proxy.sh        (DURATION=10s THREADS=2 CONNECTIONS=32 ROUNDS=3)
#        PIN=1 bash bench/proxy.sh  (THREADS=1 CONNECTIONS=64 ROUNDS=5)
#        TARGETS="nginx cookie" bash bench/proxy.sh   (a subset, while iterating)
#        LATENCY=0 PIN=1 bash bench/proxy.sh          (rates only)
#        OURS_BINARY=/path/to/oauth-consumer-server bash bench/proxy.sh  (another build)
#        BASELINE_BINARY=/path/to/an/earlier/build PIN=1 bash bench/proxy.sh
#          (also runs that build, as base-cookie and base-bearer, in the same
#          alternating rounds, and prints ours/base by round: before and after)
set -euo pipefail
cd "$(dirname "$0")/.."

PIN=${PIN:-0}
if [ "$PIN" = 1 ]; then
  THREADS=${THREADS:-1}
  CONNECTIONS=${CONNECTIONS:-64}
  ROUNDS=${ROUNDS:-5}
  LATENCY=${LATENCY:-1}
  server_cpu=(taskset -c "${SERVER_CPU:-0}")
  load_cpu=(taskset -c "${LOAD_CPU:-1}")
  nginx_workers=1
else
  THREADS=${THREADS:-2}
  CONNECTIONS=${CONNECTIONS:-32}
  ROUNDS=${ROUNDS:-3}
  LATENCY=${LATENCY:-0}
  server_cpu=()
  load_cpu=()
  nginx_workers=auto
fi
DURATION=${DURATION:-10s}
STUB_PORT=${STUB_PORT:-18181}
NGINX_PORT=${NGINX_PORT:-18182}
OURS_PORT=${OURS_PORT:-18183}
PATH_UNDER_TEST=/v2/self
OURS_BINARY=${OURS_BINARY:-target/release/oauth-consumer-server}
BASELINE_BINARY=${BASELINE_BINARY:-}
BASELINE_PORT=${BASELINE_PORT:-18184}

for tool in wrk nginx curl taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install wrk nginx-light curl util-linux)" >&2; exit 1; }
done
if [ "$PIN" = 1 ] && [ "$(nproc --all)" -lt 2 ]; then
  echo "PIN=1 needs two cores" >&2
  exit 1
fi

cargo build --release --locked --quiet --bin oauth-consumer-server --example bench_upstream --example bench_load

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits until http://127.0.0.1:$1$2 answers at all.
wait_for() {
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1$2" && return 0
    sleep 0.1
  done
  echo "nothing answers on port $1" >&2
  exit 1
}

# The stub.
"${load_cpu[@]}" target/release/examples/bench_upstream "$STUB_PORT" >"$work/stub.log" 2>&1 &
stub_pid=$!
pids+=("$stub_pid")

# nginx: keep-alive to the stub, like our pooled client; no access log.
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes $nginx_workers;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  upstream stub { server 127.0.0.1:$STUB_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://stub;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
"${server_cpu[@]}" nginx -p "$work/nginx" -e "$work/nginx/logs/error.log" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
pids+=("$nginx_pid")

# Starts build $1 of ours on port $2, logging to $3, with an operator
# consumer (the stub accepts any); sets started_pid. RUST_LOG=warn drops the
# per-request log line, as `access_log off` does for nginx.
start_ours() {
  RUST_LOG=warn "${server_cpu[@]}" "$1" \
    --host 127.0.0.1 --port "$2" \
    --app-url "http://127.0.0.1:$2/" \
    --api-host "http://127.0.0.1:$STUB_PORT" \
    --oauth-consumer-key bench-consumer --oauth-consumer-secret bench-consumer-secret \
    --oauth-signature-method HMAC-SHA512 >"$3" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
}

# Logs in to ours at $1 through the real dance (the stub plays the API's
# token endpoints; the authorize step is the browser's, so the script goes
# straight to the callback), then creates a proxy token with the session;
# sets cookie_header and bearer_header, and checks that both are proxied.
log_in() {
  local ours=$1 jar csrf authorize session token header status
  jar=$(mktemp -p "$work")
  csrf=$(curl -sf -c "$jar" -b "$jar" "$ours/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -n1)
  authorize=$(curl -sf -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' --data-urlencode "csrf=$csrf" "$ours/login")
  case "$authorize" in
    *"oauth_token=bench-request"*) ;;
    *) echo "login did not reach the authorize step: $authorize" >&2; exit 1 ;;
  esac
  curl -sf -c "$jar" -b "$jar" -o /dev/null "$ours/callback?oauth_token=bench-request&oauth_verifier=bench-verifier"
  session=$(awk '$6 == "ocs_session" { print $7 }' "$jar")
  [ -n "$session" ] || { echo "no session cookie after the login" >&2; exit 1; }
  cookie_header="Cookie: ocs_session=$session"
  token=$(curl -sf -b "$jar" -H "Origin: $ours" -H 'Content-Type: application/json' \
    -d '{"name":"bench"}' "$ours/tokens" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
  [ -n "$token" ] || { echo "could not create a proxy token" >&2; exit 1; }
  bearer_header="Authorization: Bearer $token"
  for header in "$cookie_header" "$bearer_header"; do
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "$header" "$ours/api$PATH_UNDER_TEST")
    [ "$status" = 200 ] || { echo "the proxy answered $status" >&2; exit 1; }
  done
}

start_ours "$OURS_BINARY" "$OURS_PORT" "$work/ours.log"
ours_pid=$started_pid
if [ -n "$BASELINE_BINARY" ]; then
  start_ours "$BASELINE_BINARY" "$BASELINE_PORT" "$work/base.log"
  base_pid=$started_pid
fi

wait_for "$STUB_PORT" /
wait_for "$NGINX_PORT" /
wait_for "$OURS_PORT" /health
[ -z "$BASELINE_BINARY" ] || wait_for "$BASELINE_PORT" /health

ours="http://127.0.0.1:$OURS_PORT"
base="http://127.0.0.1:$BASELINE_PORT"
if [ -n "$BASELINE_BINARY" ]; then
  log_in "$base"
  base_cookie_header=$cookie_header
  base_bearer_header=$bearer_header
fi
log_in "$ours"

# Resident memory of process $1, in MiB.
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
sleep 1
idle_rss=$(rss_mib "$ours_pid")
[ -z "$BASELINE_BINARY" ] || base_idle_rss=$(rss_mib "$base_pid")

# CPU time (clock ticks, user + system) of process $1 and its children.
cpu_ticks() {
  local total=0 pid ticks
  for pid in "$1" $(pgrep -P "$1"); do
    ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + ticks))
  done
  echo "$total"
}

# Runs wrk against $3 while measuring the CPU of process $2 (extra wrk
# arguments follow); prints one table row.
load() {
  local name=$1 pid=$2 url=$3
  shift 3
  local out before after
  before=$(cpu_ticks "$pid")
  out=$("${load_cpu[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
  after=$(cpu_ticks "$pid")
  if grep -q 'Non-2xx' <<<"$out"; then
    echo "$name: some answers were not 2xx:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk -v name="$name" -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
    /^ +50%/ { p50 = $2 } /^ +75%/ { p75 = $2 } /^ +90%/ { p90 = $2 } /^ +99%/ { p99 = $2 }
    /^Requests\/sec:/ { rps = $2 }
    / requests in / { requests = $1 }
    END { printf "%-11s %12s %9s %9s %9s %9s %12.1f\n", name, rps, p50, p75, p90, p99, ticks * 1e6 / hz / requests }
  ' <<<"$out"
}

# The median of the numbers on standard input, one a line.
median() {
  sort -g | awk 'NF { v[++n] = $1 } END { if (n) printf "%.2f\n", (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'
}

# Column $2 of the rows of target $1 (from $rows).
column_of() { awk -v name="$1" -v column="$2" '$1 == name { print $column }' <<<"$rows"; }

# The ratio $1/$2 of each round (the k-th row of $1 over the k-th of $2),
# rounded, one a line.
ratios_by_round() {
  awk -v name="$1" -v reference="$2" '
    $1 == reference { reference_rate[++references] = $2 }
    $1 == name { rate[++names] = $2 }
    END { for (k = 1; k <= names && k <= references; k++) printf "%.2f\n", rate[k] / reference_rate[k] }
  ' <<<"$rows"
}

if [ "$PIN" = 1 ]; then
  echo "one-core arrangement: ours and nginx (1 worker) on cpu${SERVER_CPU:-0}; wrk, the stub and the latency probe on cpu${LOAD_CPU:-1}"
fi
echo "wrk: $THREADS threads, $CONNECTIONS connections, $DURATION each; GET $PATH_UNDER_TEST; $(nproc --all) cores"
echo "cookie: ours with the session cookie; bearer: ours with a proxy token"
echo "cpu/req: CPU time of the server under test (not of the stub behind it) per request"
echo "the targets alternate for $ROUNDS rounds, so that other load on the machine falls on all"
printf "%-11s %12s %9s %9s %9s %9s %12s\n" target "requests/s" p50 p75 p90 p99 "cpu/req (us)"
rows=""
case " ${TARGETS:-} " in
  *" base-"*) [ -n "$BASELINE_BINARY" ] || { echo "the base-* targets need BASELINE_BINARY" >&2; exit 1; } ;;
esac
default_targets="direct nginx cookie bearer"
[ -z "$BASELINE_BINARY" ] || default_targets+=" base-cookie base-bearer"
for round in $(seq "$ROUNDS"); do
  for target in ${TARGETS:-$default_targets}; do
    row=""
    case $target in
      direct) [ "$round" = 1 ] && row=$(load direct "$stub_pid" "http://127.0.0.1:$STUB_PORT$PATH_UNDER_TEST") ;;
      nginx) row=$(load nginx "$nginx_pid" "http://127.0.0.1:$NGINX_PORT$PATH_UNDER_TEST") ;;
      cookie) row=$(load cookie "$ours_pid" "$ours/api$PATH_UNDER_TEST" -H "$cookie_header") ;;
      bearer) row=$(load bearer "$ours_pid" "$ours/api$PATH_UNDER_TEST" -H "$bearer_header") ;;
      base-cookie) row=$(load base-cookie "$base_pid" "$base/api$PATH_UNDER_TEST" -H "$base_cookie_header") ;;
      base-bearer) row=$(load base-bearer "$base_pid" "$base/api$PATH_UNDER_TEST" -H "$base_bearer_header") ;;
      *) echo "unknown target $target (direct, nginx, cookie, bearer, and base-cookie, base-bearer with BASELINE_BINARY)" >&2; exit 1 ;;
    esac
    [ -n "$row" ] && { echo "$row"; rows+="$row"$'\n'; }
  done
done

echo
for target in nginx cookie bearer base-cookie base-bearer; do
  rates=$(column_of "$target" 2)
  [ -n "$rates" ] || continue
  echo "$target: median $(median <<<"$rates") requests/s, $(column_of "$target" 7 | median) us of CPU per request"
done
for target in cookie bearer; do
  ratios=$(ratios_by_round "$target" nginx)
  [ -n "$ratios" ] || continue
  target_ratio=0.80
  [ "$target" = bearer ] && target_ratio=0.90
  echo "$target/nginx by round: $(tr '\n' ' ' <<<"$ratios")"
  echo "$target/nginx: $(median <<<"$ratios"), the median (target: $target_ratio or more)"
done
for target in cookie bearer; do
  ratios=$(ratios_by_round "$target" "base-$target")
  [ -n "$ratios" ] || continue
  echo "$target/base-$target by round: $(tr '\n' ' ' <<<"$ratios")"
  echo "$target/base-$target: $(median <<<"$ratios"), the median (after/before; 1.00 is no change)"
  echo "$target/base-$target, CPU per request: $(column_of "$target" 7 | median) us after, $(column_of "base-$target" 7 | median) us before (medians)"
done
echo "ours, idle RSS after a login: $idle_rss MiB (target: 15 or less); after the runs: $(rss_mib "$ours_pid") MiB"
[ -z "$BASELINE_BINARY" ] || echo "baseline, idle RSS after a login: $base_idle_rss MiB; after the runs: $(rss_mib "$base_pid") MiB"

[ "$LATENCY" = 1 ] || exit 0

# Runs the open-loop probe at $2 requests/s against $1 (headers follow);
# prints its key=value line.
probe() {
  local url=$1 rate=$2
  shift 2
  local headers=() header
  for header in "$@"; do headers+=(-H "$header"); done
  "${load_cpu[@]}" target/release/examples/bench_load --rate "$rate" --connections "$CONNECTIONS" \
    --seconds "${DURATION%s}" "${headers[@]}" "$url"
}

# The value of key $1 in a probe's line $2.
field() { tr ' ' '\n' <<<"$2" | awk -F= -v key="$1" '$1 == key { print $2 }'; }

echo
echo "latency at half of our rate, open loop (examples/bench_load.rs, $CONNECTIONS connections, $DURATION each),"
echo "from each request's scheduled time; the stub called directly at the same rate alternates with ours"
for target in cookie bearer; do
  median_rate=$(column_of "$target" 2 | median)
  [ -n "$median_rate" ] || continue
  rate=$(awk -v r="$median_rate" 'BEGIN { printf "%d", r / 2 }')
  header=$cookie_header
  [ "$target" = bearer ] && header=$bearer_header
  above=""
  for round in $(seq "$ROUNDS"); do
    direct=$(probe "http://127.0.0.1:$STUB_PORT$PATH_UNDER_TEST" "$rate")
    through=$(probe "$ours/api$PATH_UNDER_TEST" "$rate" "$header")
    for line in "$direct" "$through"; do
      if [ "$(field not_2xx "$line")" != 0 ]; then
        echo "some answers were not 2xx: $line" >&2
        exit 1
      fi
    done
    echo "$target at $rate/s, round $round: direct $direct"
    echo "$target at $rate/s, round $round: ours   $through"
    above+="$(awk -v a="$(field p99_us "$through")" -v b="$(field p99_us "$direct")" 'BEGIN { printf "%.3f", (a - b) / 1000 }')"$'\n'
  done
  echo "$target: p99 above the stub's by round (ms): $(tr '\n' ' ' <<<"$above")"
  echo "$target: p99 above the stub's: $(median <<<"$above") ms, the median (target: 0.7 or less)"
done
