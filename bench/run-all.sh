#!/usr/bin/env bash
# The whole benchmark of BENCHMARKS.md in one go: installs what is missing (Redis 7 from
# Debian, the peer script's npm packages), builds the release binary, starts a private Redis
# (AOF, appendfsync everysec) on 127.0.0.1, and runs `leasehold bench all` with a spawned
# server and the redis-semaphore peer interleaved, then prints the ratios.
#
#   bench/run-all.sh [extra `leasehold bench` flags, e.g. --repeat 3 --duration 10]
#
# Environment: CARGO_TARGET_DIR (default target/), REDIS_PORT (default 6390),
# BENCH_JSON (default bench/results.jsonl: every result as a JSON line).
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT="${REDIS_PORT:-6390}"
TARGET="${CARGO_TARGET_DIR:-target}"
BENCH_JSON="${BENCH_JSON:-bench/results.jsonl}"

if ! command -v redis-server >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if ! command -v node >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
(cd bench/redis-semaphore && npm ci --no-audit --no-fund --silent)

cargo build --release -p leasehold
BIN="$TARGET/release/leasehold"

redis_dir="$(mktemp -d)"
cleanup() {
  if [ -f "$redis_dir/redis.pid" ]; then
    kill "$(cat "$redis_dir/redis.pid")" 2>/dev/null || true
  fi
  rm -rf "$redis_dir"
}
trap cleanup EXIT
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$redis_dir" \
  --appendonly yes --appendfsync everysec --save "" \
  --daemonize yes --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log"
for _ in $(seq 50); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
echo "redis: $(redis-server --version | cut -d' ' -f1-3), AOF appendfsync everysec, port $REDIS_PORT"
echo "node: $(node --version), redis-semaphore $(node -p 'require("./bench/redis-semaphore/node_modules/redis-semaphore/package.json").version')"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

"$BIN" bench all --spawn-server --half-load \
  --redis-semaphore bench/redis-semaphore/bench.js \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" \
  --json "$BENCH_JSON" "$@"
