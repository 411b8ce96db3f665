#!/usr/bin/env python3
"""Where Redis' command time goes per run: the SLOWLOG of a pass (taken with
`slowlog-log-slower-than 0`), grouped by top-level command or script, with the commands the
scripts ran listed apart.

    python3 bench/slowlog.py <port> <runs> [<names file>]   # prints a markdown table

Scripts are named by sha1: am2z's from its sources (am2z/src/**/scripts/*.lua with their
`--- @include "name"` lines expanded, as the runtime builds them), others from the optional
names file (lines `SCRIPT <sha1> <name>`, as `node bench/peers/bullmq.js script-names`
prints them). An unknown script shows its sha1 prefix and first key. Commands a script runs
are logged from the fake client `?:0`: their time is inside the script's, so they are listed
apart and left out of the total. No dependencies: speaks RESP over a socket, loopback only.
"""
import collections
import glob
import hashlib
import os
import re
import socket
import sys

PORT, RUNS = int(sys.argv[1]), float(sys.argv[2])
NAMES_FILE = sys.argv[3] if len(sys.argv) > 3 else None
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOKKEEPING = {"slowlog", "config", "info", "client", "flushdb", "flushall", "ping", "quit", "hello"}


def am2z_names():
    """sha1 -> script file, for every am2z Lua script (includes expanded)."""
    names = {}
    for path in glob.glob(os.path.join(ROOT, "am2z", "src", "**", "scripts", "*.lua"), recursive=True):
        include_dir = os.path.join(os.path.dirname(path), "include")
        with open(path, encoding="utf-8") as f:
            source = f.read()
        lines = source.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # as Rust's str::lines
        out = []
        for line in lines:
            line = line[:-1] if line.endswith("\r") else line
            m = re.fullmatch(r'--- @include "([^"]+)"', line)
            inc = os.path.join(include_dir, f"{m.group(1)}.lua") if m else None
            if inc and os.path.exists(inc):
                with open(inc, encoding="utf-8") as f:
                    out.append(f.read())
            else:
                out.append(line)
            out.append("\n")
        names[hashlib.sha1("".join(out).encode()).hexdigest()] = os.path.basename(path)
    return names


names = am2z_names()
if NAMES_FILE and os.path.exists(NAMES_FILE):
    for line in open(NAMES_FILE):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "SCRIPT":
            names[parts[1]] = parts[2]

sock = socket.create_connection(("127.0.0.1", PORT))
reader = sock.makefile("rb")
sock.sendall(b"*3\r\n$7\r\nSLOWLOG\r\n$3\r\nGET\r\n$8\r\n10000000\r\n")


def read():
    line = reader.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind in (b"+", b"-"):
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else reader.read(n + 2)[:-2].decode("latin1")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read() for _ in range(n)]
    raise ValueError(f"unexpected reply {line!r}")


def script_name(args):
    sha = args[1].lower() if len(args) > 1 else "?"
    if sha in names:
        return names[sha]
    first_key = args[3] if len(args) > 3 and args[2] not in ("0", None) else ""
    shape = re.sub(r"[0-9a-f]{8,}|\d+", "…", first_key)[:40]
    return f"{sha[:8]} ({shape})" if shape else sha[:8]


costs = collections.defaultdict(lambda: [0, 0])
for entry in read():
    micros, args, addr = entry[2], entry[3], entry[4]
    command = (args[0] or "").lower()
    if command in BOOKKEEPING or command.startswith("slowlog"):
        continue  # the bench's own bookkeeping (and clients' connection set-up)
    if command in ("evalsha", "evalsha_ro"):
        key = f"EVALSHA {script_name(args)}"
    elif command in ("eval", "eval_ro"):
        key = f"EVAL {hashlib.sha1((args[1] or '').encode('latin1')).hexdigest()[:8]}"
    else:
        key = command.upper()
    inner = addr == "?:0"
    costs[(inner, key)][0] += 1
    costs[(inner, key)][1] += micros
total = sum(us for (inner, _), (_, us) in costs.items() if not inner) or 1
print("| command or script (top level) | calls per run | µs per call | µs per run | share |")
print("|---|---:|---:|---:|---:|")
for (inner, key), (calls, us) in sorted(costs.items(), key=lambda kv: -kv[1][1]):
    if not inner and (us / total >= 0.005 or calls / RUNS >= 0.05):
        print(f"| `{key}` | {calls / RUNS:.2f} | {us / calls:.1f} | {us / RUNS:.1f} | {100 * us / total:.0f}% |")
calls_total = sum(c for (inner, _), (c, _) in costs.items() if not inner)
print(f"| **total** | **{calls_total / RUNS:.2f}** | | **{total / RUNS:.1f}** | |")
print()
inside = sorted(((k, v) for (inner, k), v in costs.items() if inner), key=lambda kv: -kv[1][1])
print("Inside those scripts, per run: " + (", ".join(
    f"`{k}` {c / RUNS:.2f}× ({us / RUNS:.1f} µs)" for k, (c, us) in inside if c / RUNS >= 0.05) or "nothing"))
