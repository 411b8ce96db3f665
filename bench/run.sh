#!/usr/bin/env bash
# The whole benchmark in one command: am2z (bench/, release build), the local runtime's
# overhead example, the BullMQ peer scripts (the directory PEER_SRC names, copied to a temp dir
# and npm-installed there) and redis-benchmark, all against one scratch Redis that this script
# starts on a free loopback port and stops by its pid. Writes BENCHMARKS.md at the repo root.
#
#   PEER_SRC=<dir> bench/run.sh  # everything (~10 min on 2 cores); <dir> holds the peer
#                                # scripts: bench-bullmq.js, package.json, cmdstats.sh,
#                                # redis-physical.sh
#   PEERS=0 bench/run.sh         # am2z only (the peer columns show "not run")
#   PEER_REPS=1 bench/run.sh     # fewer peer repetitions
#   BENCH_RAW=/tmp/raw bench/run.sh   # also keep the raw outputs there
#
# The peer scripts FLUSH the Redis they target: they only ever get the scratch port, and
# only after checking that the server there is the one this script started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER_SRC=${PEER_SRC:-}
PEERS=${PEERS:-1}
if [[ $PEERS == 1 && ! -f $PEER_SRC/bench-bullmq.js ]]; then
    echo "the BullMQ peer runs from PEER_SRC, a directory with bench-bullmq.js (got '${PEER_SRC}');" >&2
    echo "set PEER_SRC, or PEERS=0 to measure am2z alone" >&2
    exit 1
fi
PEER_REPS=${PEER_REPS:-}
PORT=${BENCH_REDIS_PORT:-6390}
COMMAND="${CARGO_TARGET_DIR:+CARGO_TARGET_DIR=$CARGO_TARGET_DIR }${PEER_REPS:+PEER_REPS=$PEER_REPS }$([[ $PEERS == 1 ]] || echo "PEERS=$PEERS ")bench/run.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/am2z-bench.XXXXXX")
REDIS_PID=""
cleanup() {
    if [[ -n $REDIS_PID ]] && kill -0 "$REDIS_PID" 2>/dev/null; then
        kill "$REDIS_PID"
        for _ in $(seq 50); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n==> %s\n' "$*" >&2; }

# A free loopback port: nothing answers and nothing listens there.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 20); do port_free "$PORT" && break; PORT=$((PORT + 1)); done
port_free "$PORT" || { echo "no free port near ${BENCH_REDIS_PORT:-6390}" >&2; exit 1; }

say "building (release)"
cd "$ROOT"
cargo build --release -p am2z-bench
cargo build --release -p examples --example local_overhead

say "machine and versions"
{
    echo "nproc=$(nproc)"
    echo "kernel=$(uname -r)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "rustc=$(rustc --version)"
    echo "redis=$(redis-server --version)"
    echo "node=$(node --version 2>/dev/null || echo none)"
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit=$(git rev-parse --short HEAD)"
    echo "dirty=$(git status --porcelain --untracked-files=no | wc -l)"
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
} > "$WORK/env.txt"
cat "$WORK/env.txt" >&2

say "local runtime overhead (examples/local_overhead)"
cargo run --release -q -p examples --example local_overhead | tee "$WORK/local.txt"

say "scratch redis-server on 127.0.0.1:$PORT"
mkdir -p "$WORK/redis"
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$WORK/redis" --pidfile "$WORK/redis/redis.pid" --logfile "$WORK/redis/redis.log"
for _ in $(seq 50); do [[ -s $WORK/redis/redis.pid ]] && break; sleep 0.1; done
REDIS_PID=$(cat "$WORK/redis/redis.pid")
for _ in $(seq 50); do redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
# The server on $PORT must be ours before anything flushes it.
SERVED_PID=$(redis-cli -p "$PORT" info server | tr -d '\r' | awk -F: '/^process_id:/{print $2}')
[[ $SERVED_PID == "$REDIS_PID" ]] || { echo "the Redis on $PORT is not ours ($SERVED_PID != $REDIS_PID)" >&2; exit 1; }
URL="redis://127.0.0.1:$PORT"

say "am2z (bench/)"
cargo run --release -q -p am2z-bench -- --redis "$URL" | tee "$WORK/am2z.txt"

say "where Redis' time goes: SLOWLOG of every command during a short throughput pass"
redis-cli -p "$PORT" config set slowlog-max-len 1000000 >/dev/null
redis-cli -p "$PORT" config set slowlog-log-slower-than 0 >/dev/null
redis-cli -p "$PORT" slowlog reset >/dev/null
cargo run --release -q -p am2z-bench -- --redis "$URL" --quick --only throughput > "$WORK/profiled.txt"
redis-cli -p "$PORT" config set slowlog-log-slower-than 10000 >/dev/null
RUNS=$(awk '/^RESULT am2z.throughput.runs_total /{sub("median=", "", $3); print $3}' "$WORK/profiled.txt")
python3 "$ROOT/bench/script_costs.py" "$PORT" "$RUNS" | tee "$WORK/script-costs.md"
redis-cli -p "$PORT" slowlog reset >/dev/null

if [[ $PEERS == 1 ]]; then
    say "BullMQ peer ($PEER_SRC, npm install in a temp copy)"
    cp -r "$PEER_SRC" "$WORK/peer"
    chmod -R u+w "$WORK/peer"
    (cd "$WORK/peer" && npm install --no-audit --no-fund --loglevel=error >&2)
    (cd "$WORK/peer" && REDIS_PORT=$PORT node bench-bullmq.js latency,fanout3,flow,chain,session ${PEER_REPS:-5}) | tee "$WORK/bullmq.txt"
    (cd "$WORK/peer" && REDIS_PORT=$PORT node bench-bullmq.js throughput ${PEER_REPS:-3}) | tee -a "$WORK/bullmq.txt"
    (cd "$WORK/peer" && ./cmdstats.sh "$PORT") | tee "$WORK/cmdstats.txt"

    say "redis-benchmark (peer script, plus the PUBLISH a step makes)"
    (cd "$WORK/peer" && ./redis-physical.sh ${PEER_REPS:-3} "$PORT") | tee "$WORK/physical.txt"
    cp "$WORK/peer/results/raw/redis-benchmark.csv" "$WORK/redis-benchmark.csv"
    for r in $(seq 1 "${PEER_REPS:-3}"); do
        redis-benchmark -p "$PORT" --csv -n 100000 PUBLISH ch msg | tail -n +2 | sed "s/^/\"c50\",$r,/"
        redis-benchmark -p "$PORT" --csv -c 1 -n 50000 PUBLISH ch msg | tail -n +2 | sed "s/^/\"c1\",$r,/"
    done >> "$WORK/redis-benchmark.csv"
    redis-cli -p "$PORT" flushdb >/dev/null
fi

say "stopping the scratch Redis (pid $REDIS_PID)"
kill "$REDIS_PID"
for _ in $(seq 50); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
REDIS_PID=""

say "writing BENCHMARKS.md"
if [[ -n ${BENCH_RAW:-} ]]; then  # keep the raw outputs (report.py can re-render from them)
    mkdir -p "$BENCH_RAW" && cp "$WORK"/*.txt "$WORK"/*.md "$WORK"/*.csv "$BENCH_RAW"/ 2>/dev/null || true
fi
python3 "$ROOT/bench/report.py" "$WORK" "$COMMAND" > "$ROOT/BENCHMARKS.md.tmp"
mv "$ROOT/BENCHMARKS.md.tmp" "$ROOT/BENCHMARKS.md"
echo "wrote $ROOT/BENCHMARKS.md" >&2
