#!/usr/bin/env bash
# Hits over HTTP against the sidecar, beside redis-benchmark's GET on a private redis-server, in
# one run on this machine: 50 connections each, the load generator in its own process, the two
# measured in turn for ROUNDS rounds so that the machine's noise falls on both.
#   benches/sidecar.sh [SECONDS] [ROUNDS]   (needs wrk, redis-server, redis-benchmark; a release build)
# Prints one line per round (req/s and p99 of each, and the ratio); BENCHMARKS.md records them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-8}"
rounds="${2:-3}"
bin=target/release/freshcache
[ -x "$bin" ] || cargo build --release -q
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
export XDG_CONFIG_HOME="$work" XDG_STATE_HOME="$work" XDG_DATA_HOME="$work" XDG_CACHE_HOME="$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$bin" --data-dir "$work/data" warehouse init --sales 5000 >/dev/null 2>&1
http_port="$(free_port)"
"$bin" --data-dir "$work/data" --latency 0s serve --listen "127.0.0.1:$http_port" \
  >"$work/serve.out" 2>"$work/serve.err" &
url="http://127.0.0.1:$http_port/v1/answers/sales_by_region?quarter=Q4&year=2026"
for _ in $(seq 1 100); do curl -fs "$url" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$url" >/dev/null

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$work" >/dev/null 2>&1 &
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$redis_port" set key:__rand_int__ "$(curl -fs "$url")" >/dev/null

echo "sidecar: wrk -t1 -c50 -d${seconds}s --latency (one cached answer, $(curl -fs "$url" | wc -c) bytes)"
echo "redis:   redis-benchmark -t get -c 50 -P 1 -r 1 (the same answer as the value, ${seconds}s worth)"
for round in $(seq 1 "$rounds"); do
  out="$(wrk -t1 -c50 -d"${seconds}s" --latency "$url")"
  sidecar="$(echo "$out" | awk '/Requests\/sec/ { printf "%d", $2 }')"
  sidecar_p99="$(echo "$out" | awk '$1 == "99%" { print $2 }')"
  csv="$(redis-benchmark -p "$redis_port" -t get -c 50 -P 1 -n $((80000 * seconds)) -r 1 -q --csv | tail -1)"
  redis="$(echo "$csv" | cut -d, -f2 | tr -d '"' | cut -d. -f1)"
  redis_p99="$(echo "$csv" | cut -d, -f7 | tr -d '"')"
  ratio="$(awk -v a="$sidecar" -v b="$redis" 'BEGIN { printf "%.2f", a / b }')"
  echo "round $round: sidecar $sidecar req/s (p99 $sidecar_p99), redis $redis req/s (p99 ${redis_p99} ms), ratio ${ratio}x"
done
