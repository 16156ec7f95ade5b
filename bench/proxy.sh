#!/usr/bin/env bash
# Proxy benchmark, in one go on this machine: a fast upstream stub
# (examples/bench_upstream.rs), our server (release build) in front of it,
# and nginx (`proxy_pass`, Debian's nginx-light) in front of the same stub.
# Each is loaded by wrk with the same threads, connections and duration;
# prints requests/s and latency percentiles for direct, nginx and ours, and
# the ratio ours/nginx. Ours signs every request with HMAC-SHA512 and
# authenticates a proxy token, as a service would use it.
#
# Usage: bash bench/proxy.sh  (DURATION=10s THREADS=2 CONNECTIONS=32 ROUNDS=3)
#        TARGETS="nginx ours" bash bench/proxy.sh   (a subset, while iterating)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
STUB_PORT=${STUB_PORT:-18181}
NGINX_PORT=${NGINX_PORT:-18182}
OURS_PORT=${OURS_PORT:-18183}
PATH_UNDER_TEST=/v2/self

for tool in wrk nginx curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install wrk nginx-light curl)" >&2; exit 1; }
done

cargo build --release --locked --quiet --bin oauth-consumer-server --example bench_upstream

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
target/release/examples/bench_upstream "$STUB_PORT" >"$work/stub.log" 2>&1 &
pids+=($!)

# nginx: keep-alive to the stub, like our pooled client; no access log.
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes auto;
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
nginx -p "$work/nginx" -e "$work/nginx/logs/error.log" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
pids+=("$nginx_pid")

# Ours, with an operator consumer (the stub accepts any). RUST_LOG=warn
# drops the per-request log line, as `access_log off` does for nginx.
RUST_LOG=warn target/release/oauth-consumer-server \
  --host 127.0.0.1 --port "$OURS_PORT" \
  --app-url "http://127.0.0.1:$OURS_PORT/" \
  --api-host "http://127.0.0.1:$STUB_PORT" \
  --oauth-consumer-key bench-consumer --oauth-consumer-secret bench-consumer-secret \
  --oauth-signature-method HMAC-SHA512 >"$work/ours.log" 2>&1 &
ours_pid=$!
pids+=("$ours_pid")

wait_for "$STUB_PORT" /
wait_for "$NGINX_PORT" /
wait_for "$OURS_PORT" /health

# Log in through the real dance, then create a proxy token.
ours="http://127.0.0.1:$OURS_PORT"
jar="$work/cookies"
csrf=$(curl -sf -c "$jar" -b "$jar" "$ours/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -n1)
authorize=$(curl -sf -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' --data-urlencode "csrf=$csrf" "$ours/login")
case "$authorize" in
  *"oauth_token=bench-request"*) ;;
  *) echo "login did not reach the authorize step: $authorize" >&2; exit 1 ;;
esac
curl -sf -c "$jar" -b "$jar" -o /dev/null "$ours/callback?oauth_token=bench-request&oauth_verifier=bench-verifier"
token=$(curl -sf -c "$jar" -b "$jar" -H "Origin: $ours" -H 'Content-Type: application/json' \
  -d '{"name":"bench"}' "$ours/tokens" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || { echo "could not create a proxy token" >&2; exit 1; }
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$ours/api$PATH_UNDER_TEST")
[ "$status" = 200 ] || { echo "the proxy answered $status" >&2; exit 1; }

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
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
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
    END { printf "%-7s %12s %9s %9s %9s %9s %12.1f\n", name, rps, p50, p75, p90, p99, ticks * 1e6 / hz / requests }
  ' <<<"$out"
}

echo "wrk: $THREADS threads, $CONNECTIONS connections, $DURATION each; GET $PATH_UNDER_TEST; $(nproc) cores"
echo "cpu/req: CPU time of the server under test (not of the stub behind it) per request"
echo "nginx and ours alternate for $ROUNDS rounds, so that other load on the machine falls on both"
printf "%-7s %12s %9s %9s %9s %9s %12s\n" target "requests/s" p50 p75 p90 p99 "cpu/req (us)"
rows=""
for round in $(seq "$ROUNDS"); do
  for target in ${TARGETS:-direct nginx ours}; do
    row=""
    case $target in
      direct) [ "$round" = 1 ] && row=$(load direct "${pids[0]}" "http://127.0.0.1:$STUB_PORT$PATH_UNDER_TEST") ;;
      nginx) row=$(load nginx "$nginx_pid" "http://127.0.0.1:$NGINX_PORT$PATH_UNDER_TEST") ;;
      ours) row=$(load ours "$ours_pid" "$ours/api$PATH_UNDER_TEST" -H "Authorization: Bearer $token") ;;
    esac
    [ -n "$row" ] && { echo "$row"; rows+="$row"$'\n'; }
  done
done
# The ratio of each round (ours after nginx), then their median.
awk '$1 == "nginx" { nginx = $2 } $1 == "ours" && nginx { ratios[++n] = $2 / nginx; nginx = 0 }
     END {
       if (!n) exit
       for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (ratios[j] < ratios[i]) { t = ratios[i]; ratios[i] = ratios[j]; ratios[j] = t }
       line = "ours/nginx by round:"
       for (i = 1; i <= n; i++) line = line sprintf(" %.2f", ratios[i])
       print line
       median = (n % 2) ? ratios[(n + 1) / 2] : (ratios[n / 2] + ratios[n / 2 + 1]) / 2
       printf "ours/nginx: %.2f, the median (target: 0.80 or more)\n", median
     }' <<<"$rows"
