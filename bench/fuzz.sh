#!/usr/bin/env bash
# Runs every fuzz target under fuzz/ for SECONDS each, one at a time, then
# prints per target the executions libFuzzer made and how it ended.
#
#   bash bench/fuzz.sh SECONDS [TARGET…]
#
# RUNS=N stops each target after N executions instead, if it gets there
# before SECONDS. TIMEOUT (seconds per input, 10), RSS_LIMIT_MB (2048) and
# MAX_LEN (longest input, 4096) are passed to libFuzzer.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Each target keeps its corpus in fuzz/corpus/TARGET (not committed) and
# starts from the seeds in fuzz/seeds/TARGET. A crash, a hang (a run past
# TIMEOUT seconds) or a leak (memory past RSS_LIMIT_MB) stops the target,
# leaves its input in fuzz/artifacts/TARGET, and makes the script fail.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if [ $# -lt 1 ]; then
  echo "usage: bash bench/fuzz.sh SECONDS [TARGET…]" >&2
  exit 2
fi
seconds=$1
shift
timeout_secs=${TIMEOUT:-10}
rss_limit_mb=${RSS_LIMIT_MB:-2048}
max_len=${MAX_LEN:-4096}

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build -O

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "seeds/$target"
  result=ok
  started=$SECONDS
  cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" ${RUNS:+-runs="$RUNS"} -timeout="$timeout_secs" \
    -rss_limit_mb="$rss_limit_mb" -max_len="$max_len" -print_final_stats=1 >"$logs/$target" 2>&1 \
    || { result=FAILED; status=1; }
  elapsed=$((SECONDS - started))
  # libFuzzer's last stats line: "stat::number_of_executed_units: N".
  executions=$(awk '/^stat::number_of_executed_units:/ { n = $2 } END { print n + 0 }' "$logs/$target")
  rate=$(awk '/^stat::average_exec_per_sec:/ { n = $2 } END { print n + 0 }' "$logs/$target")
  printf '%-20s %12d executions %6ss %8d/s  %s\n' "$target" "$executions" "$elapsed" "$rate" "$result"
  if [ "$result" = FAILED ]; then
    grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$logs/$target" | head -n 20 >&2 || true
  fi
done
exit "$status"
