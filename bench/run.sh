#!/usr/bin/env bash
# The whole comparison in one command: am2z (bench/, release build), the local runtime's
# overhead example, the BullMQ peer (bench/peers/, npm-installed into a temp dir here) and
# redis-benchmark, all against one scratch Redis that this script starts on a free loopback
# port and stops by its pid; then a profiled pass of each (perf of the worker and of Redis,
# SLOWLOG by script). Writes BENCHMARKS.md at the repo root.
#
#   bench/run.sh               # everything (~6 min on 2 cores); needs node + npm for the peer
#   bench/run.sh --profile     # only the profiled passes (~2 min): prints the CPU account per
#                              # one-step run (Redis by command, script and function; the
#                              # worker by function) and writes it to <target>/bench-profile.md
#                              # (or BENCH_PROFILE_OUT=<file>: keep one before and one after)
#   PEERS=0 bench/run.sh       # am2z only (the BullMQ columns show "not run")
#   PROFILE=0 bench/run.sh     # no profiled passes
#   BENCH_ROUNDS=3             # rounds: am2z and BullMQ alternate, each round 2 latency reps
#                              # and 1 throughput pass per side (so 6 and 3 in all)
#   BENCH_QUICK=1 bench/run.sh # tiny counts, one repetition: checks that it all runs (figures
#                              # meaningless); the report goes to <target>/bench-quick.md
#   BENCH_RAW=/tmp/raw bench/run.sh   # also keep the raw outputs there
#   BENCH_REDIS_PORT=6390      # first port to try for the scratch Redis
#   BENCH_PERF=0               # no perf: the worker is profiled under callgrind instead (if
#                              # valgrind is there), Redis by command and script only
#
# The peer FLUSHes the Redis it targets: it only ever gets the scratch port, and only after
# this script checked that the server there is the one it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=full
case "${1:-}" in
    "") ;;
    --profile) MODE=profile ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "usage: bench/run.sh [--profile]   (see the top of bench/run.sh)" >&2; exit 2 ;;
esac
PEERS=${PEERS:-1}
PROFILE=${PROFILE:-1}
[[ $MODE == profile ]] && PROFILE=1
QUICK=${BENCH_QUICK:-0}
ROUNDS=${BENCH_ROUNDS:-3}     # am2z and BullMQ alternate this many times
LAT_REPS=2                    # latency repetitions per round and side
TP_REPS=1                     # throughput passes per round and side
AM2Z_ARGS=()
PROFILE_RUNS=()
SLOWLOG_RUNS=2000
if [[ $QUICK == 1 ]]; then
    AM2Z_ARGS=(--quick)
    PROFILE_RUNS=(--runs 300)
    SLOWLOG_RUNS=300
    ROUNDS=${BENCH_ROUNDS:-1}
    LAT_REPS=1
    TP_REPS=1
    export LAT_N=50 CHAIN_N=20 FLOW_N=20 SESS_N=5 N=300
fi
PORT=${BENCH_REDIS_PORT:-6390}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release/am2z-bench
COMMAND="$([[ ${BENCH_QUICK:-0} == 1 ]] && echo "BENCH_QUICK=1 ")${CARGO_TARGET_DIR:+CARGO_TARGET_DIR=$CARGO_TARGET_DIR }${BENCH_ROUNDS:+BENCH_ROUNDS=$BENCH_ROUNDS }$([[ $PEERS == 1 ]] || echo "PEERS=$PEERS ")$([[ $PROFILE == 1 ]] || echo "PROFILE=$PROFILE ")bench/run.sh${1:+ $1}"

if [[ $PEERS == 1 ]] && ! { command -v node && command -v npm; } >/dev/null; then
    echo "the BullMQ peer needs node (>= 18) and npm on PATH; PEERS=0 measures am2z alone" >&2
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/am2z-bench.XXXXXX")
REDIS_PID=""
PERF_PID=""
cleanup() {
    if [[ -n $PERF_PID ]] && kill -0 "$PERF_PID" 2>/dev/null; then
        kill -INT "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
    fi
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
[[ $MODE == full ]] && cargo build --release -p examples --example local_overhead

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
    echo "branch=$(git rev-parse --abbrev-ref HEAD)"
    echo "dirty=$(git status --porcelain --untracked-files=no | wc -l)"
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
} > "$WORK/env.txt"
cat "$WORK/env.txt" >&2

if [[ $PEERS == 1 ]]; then
    say "BullMQ peer: npm install of bench/peers into a temp dir"
    mkdir -p "$WORK/peer"
    cp "$ROOT/bench/peers/package.json" "$ROOT/bench/peers/bullmq.js" "$WORK/peer/"
    (cd "$WORK/peer" && npm install --no-audit --no-fund --no-package-lock --loglevel=error >&2)
    (cd "$WORK/peer" && node bullmq.js script-names) > "$WORK/bullmq-scripts.txt"
fi

if [[ $MODE == full ]]; then
    say "local runtime overhead (examples/local_overhead)"
    cargo run --release -q -p examples --example local_overhead | tee "$WORK/local.txt"
fi

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
rcli() { redis-cli -p "$PORT" "$@"; }
redis_cpu() { rcli info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/{s+=$2} END{printf "%.6f", s}'; }
peer() { (cd "$WORK/peer" && REDIS_PORT=$PORT "$@"); }

if [[ $MODE == full ]]; then
    # am2z and BullMQ alternate in rounds (who goes first alternates too), so a change in the
    # machine's load falls on both sides; report.py pools the rounds' repetitions.
    am2z() { "$BIN" --redis "$URL" "${AM2Z_ARGS[@]}" "$@" | tee -a "$WORK/am2z.txt" | grep -v '^CMDSTAT' >&2; }
    bullmq() { peer node bullmq.js "$@" | tee -a "$WORK/bullmq.txt" | grep -v '^CMDSTAT' >&2; }
    : > "$WORK/am2z.txt"
    : > "$WORK/bullmq.txt"
    for round in $(seq 1 "$ROUNDS"); do
        for part in latency throughput; do
            if [[ $part == latency ]]; then
                sides=("am2z --only latency --reps $LAT_REPS" "bullmq one_step,chain5,parallel3_join,fanout3,session_run_stop $LAT_REPS")
            else
                sides=("am2z --only throughput --reps $TP_REPS" "bullmq throughput,chain5_load $TP_REPS")
            fi
            [[ $PEERS == 1 ]] || sides=("${sides[0]}")
            (( round % 2 == 0 )) && [[ ${#sides[@]} == 2 ]] && sides=("${sides[1]}" "${sides[0]}")
            for side in "${sides[@]}"; do
                say "round $round of $ROUNDS, $part: ${side%% *}"
                $side
            done
        done
    done
    say "am2z: sessions at rest"
    am2z --only idle

    say "Redis alone: redis-benchmark (a push+pop script, PUBLISH) and PING round trips from idle"
    SHA=$(rcli script load "redis.call('LPUSH', KEYS[1], ARGV[1]); return redis.call('RPOP', KEYS[1])")
    for r in $(seq 1 "$ROUNDS"); do
        redis-benchmark -p "$PORT" --csv -n 100000 EVALSHA "$SHA" 1 bench:lq v | tail -n +2 | sed "s/^/\"c50\",$r,/"
        redis-benchmark -p "$PORT" --csv -c 1 -n 20000 EVALSHA "$SHA" 1 bench:lq v | tail -n +2 | sed "s/^/\"c1\",$r,/"
        redis-benchmark -p "$PORT" --csv -n 100000 PUBLISH bench:ch msg | tail -n +2 | sed "s/^/\"c50\",$r,/"
        redis-benchmark -p "$PORT" --csv -c 1 -n 20000 PUBLISH bench:ch msg | tail -n +2 | sed "s/^/\"c1\",$r,/"
        # `--latency` samples a PING every 10 ms: "min max avg samples" in ms when stopped.
        timeout -s INT 5 redis-cli -p "$PORT" --latency --raw | tail -n 1 | sed "s/^/latency $r /" >> "$WORK/ping.txt" || true
    done > "$WORK/redis-benchmark.csv"
    rcli del bench:lq > /dev/null
    cat "$WORK/redis-benchmark.csv" "$WORK/ping.txt" >&2
fi

if [[ $PROFILE == 1 ]]; then
    # perf with a software clock (VMs often have no hardware counters); as root or with
    # kernel.perf_event_paranoid <= 1 to follow redis-server.
    PERF_OK=0
    if [[ ${BENCH_PERF:-1} == 0 ]]; then
        echo "perf not used (BENCH_PERF=0): Redis by function is left out (the worker: callgrind, when valgrind is installed)" > "$WORK/perf-missing.txt"
        cat "$WORK/perf-missing.txt" >&2
    elif command -v perf >/dev/null && perf record -q -e cpu-clock -o "$WORK/perf-check.data" -- true >/dev/null 2>&1 \
        && perf record -q -e cpu-clock -p "$REDIS_PID" -o "$WORK/perf-check.data" -- sleep 0.1 >/dev/null 2>&1; then
        PERF_OK=1
        rm -f "$WORK/perf-check.data"
    else
        echo "perf is missing or may not follow redis-server here: Redis by function is left out (the worker: callgrind, when valgrind is installed)" \
            > "$WORK/perf-missing.txt"
        cat "$WORK/perf-missing.txt" >&2
    fi
    # perf record of redis-server around a command; the Redis CPU it used goes to <name>.cpu.
    profiled() {
        local name=$1; shift
        local before after
        if [[ $PERF_OK == 1 ]]; then
            perf record -q -e cpu-clock -F 2999 -p "$REDIS_PID" -o "$WORK/$name.data" 2>/dev/null &
            PERF_PID=$!
            sleep 0.3
        fi
        before=$(redis_cpu)
        "$@"
        after=$(redis_cpu)
        if [[ $PERF_OK == 1 ]]; then
            kill -INT "$PERF_PID"
            wait "$PERF_PID" || true
            PERF_PID=""
        fi
        echo "$before $after" > "$WORK/$name.cpu"
    }
    slowlog_of() {  # slowlog_of <out> <runs> <command...>: every command of a pass, by script
        local out=$1 runs=$2; shift 2
        rcli config set slowlog-max-len 10000000 > /dev/null
        rcli slowlog reset > /dev/null
        rcli config set slowlog-log-slower-than 0 > /dev/null
        "$@" > /dev/null
        rcli config set slowlog-log-slower-than 10000 > /dev/null
        python3 "$ROOT/bench/slowlog.py" "$PORT" "$runs" "$WORK/bullmq-scripts.txt" > "$WORK/$out"
        rcli slowlog reset > /dev/null
        rcli config set slowlog-max-len 128 > /dev/null
    }

    say "profile: am2z one-step throughput pass at concurrency 50 (perf of the worker and of Redis)"
    WRAP=""
    [[ $PERF_OK == 1 ]] && WRAP="perf record -q -e cpu-clock -F 2999 -o $WORK/perf-worker-am2z.data --"
    profiled perf-redis-am2z env AM2Z_BENCH_WORKER_WRAP="$WRAP" "$BIN" --redis "$URL" --profile \
        "${PROFILE_RUNS[@]}" > "$WORK/profile-am2z.txt"
    grep -v '^CMDSTAT' "$WORK/profile-am2z.txt" >&2
    say "profile: am2z SLOWLOG pass ($SLOWLOG_RUNS runs)"
    slowlog_of slowlog-am2z.md "$SLOWLOG_RUNS" "$BIN" --redis "$URL" --profile --runs "$SLOWLOG_RUNS"
    cat "$WORK/slowlog-am2z.md" >&2

    if [[ $PEERS == 1 ]]; then
        say "profile: BullMQ throughput pass at concurrency 50 (perf of Redis)"
        profiled perf-redis-bullmq peer env CONC=50 node bullmq.js throughput 1 > "$WORK/profile-bullmq.txt"
        grep -v '^CMDSTAT' "$WORK/profile-bullmq.txt" >&2
        say "profile: BullMQ SLOWLOG pass ($SLOWLOG_RUNS jobs)"
        slowlog_of slowlog-bullmq.md "$SLOWLOG_RUNS" peer env CONC=50 N="$SLOWLOG_RUNS" node bullmq.js throughput 1
        cat "$WORK/slowlog-bullmq.md" >&2
    fi

    if [[ $PERF_OK == 1 ]]; then
        # µs per run = a function's share of the samples × the process' CPU per run.
        figure() { awk -v k="RESULT $2" '$1" "$2 == k { sub("median=", "", $3); print $3 }' "$WORK/$1"; }
        per_run() { awk -v a="$2" -v b="$3" -v n="$1" 'BEGIN { printf "%.3f", (b - a) * 1e6 / n }'; }
        RUNS=$(awk '/^# profile pass:/ { print $4 }' "$WORK/profile-am2z.txt")
        read -r A B < "$WORK/perf-redis-am2z.cpu"
        python3 "$ROOT/bench/perf_account.py" "$WORK/perf-redis-am2z.data" \
            "am2z: redis-server (whole pass: queueing + processing)" "$(per_run "$RUNS" "$A" "$B")" 30 \
            > "$WORK/perf-redis-am2z.md"
        python3 "$ROOT/bench/perf_account.py" "$WORK/perf-worker-am2z.data" \
            "am2z: the worker process (start-up included)" \
            "$(figure profile-am2z.txt am2z.profile.p1.c50.worker_cpu_per_run)" 40 > "$WORK/perf-worker-am2z.md"
        if [[ $PEERS == 1 ]]; then
            read -r A B < "$WORK/perf-redis-bullmq.cpu"
            python3 "$ROOT/bench/perf_account.py" "$WORK/perf-redis-bullmq.data" \
                "BullMQ: redis-server (whole pass: addBulk + processing)" \
                "$(per_run "${N:-20000}" "$A" "$B")" 30 > "$WORK/perf-redis-bullmq.md"
        fi
        cat "$WORK"/perf-*.md >&2
    elif command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
        # No perf: the worker's functions from callgrind (inclusive instruction counts) over a
        # smaller pass; Redis' side stays by command and by script.
        say "profile: am2z worker under callgrind ($SLOWLOG_RUNS runs; perf unusable here)"
        AM2Z_BENCH_WORKER_WRAP="valgrind -q --tool=callgrind --callgrind-out-file=$WORK/callgrind.%p" \
            "$BIN" --redis "$URL" --profile --runs "$SLOWLOG_RUNS" > "$WORK/callgrind-am2z.txt"
        {
            echo "**am2z: the worker process under callgrind** ($SLOWLOG_RUNS runs, start-up included;"
            echo "instructions executed, inclusive, top 40 functions; no perf here, so no µs per run)"
            echo
            echo '```'
            callgrind_annotate --inclusive=yes "$WORK"/callgrind.* 2>/dev/null \
                | awk '/^ *[0-9,]+ .*\(/ && n++ < 40 { print substr($0, 1, 160) }'
            echo '```'
        } > "$WORK/perf-worker-am2z.md"
        cat "$WORK/perf-worker-am2z.md" >&2
    fi
fi

say "stopping the scratch Redis (pid $REDIS_PID)"
kill "$REDIS_PID"
for _ in $(seq 50); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
REDIS_PID=""

if [[ -n ${BENCH_RAW:-} ]]; then  # keep the raw outputs (report.py can re-render from them)
    mkdir -p "$BENCH_RAW"
    cp "$WORK"/*.txt "$WORK"/*.md "$WORK"/*.csv "$WORK"/*.cpu "$WORK"/*.data "$BENCH_RAW"/ 2>/dev/null || true
fi
if [[ $MODE == full && $QUICK == 1 ]]; then
    mkdir -p "$TARGET_DIR"
    python3 "$ROOT/bench/report.py" "$WORK" "$COMMAND" > "$TARGET_DIR/bench-quick.md"
    echo "wrote $TARGET_DIR/bench-quick.md (BENCH_QUICK: BENCHMARKS.md left as it was)" >&2
elif [[ $MODE == full ]]; then
    say "writing BENCHMARKS.md"
    python3 "$ROOT/bench/report.py" "$WORK" "$COMMAND" > "$ROOT/BENCHMARKS.md.tmp"
    mv "$ROOT/BENCHMARKS.md.tmp" "$ROOT/BENCHMARKS.md"
    echo "wrote $ROOT/BENCHMARKS.md" >&2
else
    OUT=${BENCH_PROFILE_OUT:-$TARGET_DIR/bench-profile.md}
    mkdir -p "$(dirname "$OUT")"
    python3 "$ROOT/bench/report.py" --profile "$WORK" "$COMMAND" > "$OUT"
    cat "$OUT"
    echo "wrote $OUT" >&2
fi
