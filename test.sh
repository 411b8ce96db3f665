#!/usr/bin/env bash
# The README's test command: every test of the workspace, on a fresh Debian-like machine.
#
#   ./test.sh               installs what the tests need, starts a Redis, runs `cargo test --workspace`
#   ./test.sh -p am2z       the same, then `cargo test` with these arguments instead of `--workspace`
#
# It does three things, and says each one as it does it:
#   1. installs the system packages the tests need that are missing (apt-get, as root or
#      through sudo); nothing is installed when everything is there;
#   2. starts a Redis on 127.0.0.1:6379 when none answers there (the Redis runtime's tests use
#      it), and leaves it running for the next run; a Redis it did not start is never stopped;
#      with AM2Z_TEST_REDIS_URL set, the tests use that server and nothing is started;
#   3. runs `cargo test --workspace` (or `cargo test` with the arguments given).
# Running it again changes nothing on the machine.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '==> %s\n' "$*"; }

missing=()

# need PACKAGE CHECK WHY: when the shell test CHECK fails, the Debian package PACKAGE is
# installed; WHY is printed with it.
need() {
    local package=$1 check=$2 why=$3
    if eval "$check" >/dev/null 2>&1; then
        return
    fi
    missing+=("$package")
    say "missing: $package ($why)"
}

# --- What the tests need from the system ------------------------------------------------------
# One line per need. To add one, add a `need` line here; nothing else changes.
need redis-server "command -v redis-server" \
    "the Redis runtime's tests; the fault tests start servers of their own, with TLS"
need redis-tools "command -v redis-cli" \
    "the fault tests drive their servers with redis-cli"
need openssl "command -v openssl" \
    "the fault tests make the certificates of their TLS server"
need faketime "test -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1" \
    "the clock-skew fault test runs workers under libfaketime"
need chromium "command -v chromium" \
    "the dashboard's browser tests drive headless Chromium"
need chromium-driver "command -v chromedriver" \
    "the dashboard's browser tests drive Chromium through chromedriver (WebDriver)"
# -----------------------------------------------------------------------------------------------

if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        say "cannot install ${missing[*]}: no apt-get on this machine; install them and run again"
        exit 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null; then
        as_root=(sudo)
    else
        say "cannot install ${missing[*]}: not root and no sudo; install them and run again"
        exit 1
    fi
    say "installing ${missing[*]} with apt-get${as_root:+ (through sudo)}"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    say "system packages the tests need: all present"
fi

# --- A Redis for the Redis runtime's tests ----------------------------------------------------
answers() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if [ -n "${AM2Z_TEST_REDIS_URL:-}" ]; then
    say "Redis: using AM2Z_TEST_REDIS_URL; nothing started"
elif answers; then
    say "Redis: one answers on 127.0.0.1:6379; using it"
else
    # Ephemeral: no snapshots, no append-only file.
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
        --dir "${TMPDIR:-/tmp}" >/dev/null
    for _ in $(seq 50); do
        answers && break
        sleep 0.1
    done
    if ! answers; then
        say "Redis: redis-server did not start on 127.0.0.1:6379"
        exit 1
    fi
    say "Redis: started redis-server on 127.0.0.1:6379; it keeps running" \
        "(stop it with \`redis-cli -p 6379 shutdown nosave\`)"
fi

if [ "$#" -eq 0 ]; then
    set -- --workspace
fi
say "cargo test $*"
exec cargo test "$@"
