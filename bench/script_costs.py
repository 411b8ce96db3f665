#!/usr/bin/env python3
"""Where Redis' time goes per am2z run: SLOWLOG entries grouped by command, with EVALSHA
calls named by their script file (sha1 of scripts/lib.lua followed by the script, as scripts.rs
builds them from am2z/src/runtime/redis/scripts/*.lua).

    python3 bench/script_costs.py <port> <runs>   # prints a markdown table

Run it after a pass with `slowlog-log-slower-than 0` on a Redis of your own (bench/run.sh
does, on its scratch Redis). No dependencies: speaks RESP over a socket.
"""
import collections
import glob
import hashlib
import os
import socket
import sys

PORT, RUNS = int(sys.argv[1]), float(sys.argv[2])
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "am2z/src/runtime/redis/scripts")
with open(os.path.join(SCRIPTS, "lib.lua"), "rb") as f:
    LIB = f.read()
names = {}
for path in glob.glob(os.path.join(SCRIPTS, "*.lua")):
    with open(path, "rb") as f:
        names[hashlib.sha1(LIB + f.read()).hexdigest()] = os.path.basename(path)

sock = socket.create_connection(("127.0.0.1", PORT))
reader = sock.makefile("rb")
sock.sendall(b"*3\r\n$7\r\nSLOWLOG\r\n$3\r\nGET\r\n$7\r\n1000000\r\n")


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


costs = collections.defaultdict(lambda: [0, 0])
for entry in read():
    micros, args, addr = entry[2], entry[3], entry[4]
    command = args[0].lower()
    if command in ("slowlog", "config", "info", "client"):
        continue  # the bench's own bookkeeping
    key = f"EVALSHA {names.get(args[1], args[1][:12])}" if command == "evalsha" else command.upper()
    # Commands a script runs are logged too, from the fake client `?:0`: their time is
    # already inside the script's, so they are listed apart and left out of the total.
    inner = addr == "?:0"
    costs[(inner, key)][0] += 1
    costs[(inner, key)][1] += micros
total = sum(us for (inner, _), (_, us) in costs.items() if not inner) or 1
print("| command or script (top level) | calls per run | µs per call | µs per run | share |")
print("|---|---:|---:|---:|---:|")
for (inner, key), (calls, us) in sorted(costs.items(), key=lambda kv: -kv[1][1]):
    if not inner and us / total >= 0.005:
        print(f"| `{key}` | {calls / RUNS:.2f} | {us / calls:.1f} | {us / RUNS:.1f} | {100 * us / total:.0f}% |")
print(f"| **total** | | | **{total / RUNS:.1f}** | |")
print()
inside = sorted(((k, v) for (inner, k), v in costs.items() if inner), key=lambda kv: -kv[1][1])
print("Inside those scripts, per run: " + ", ".join(
    f"`{k}` {c / RUNS:.1f}× ({us / RUNS:.1f} µs)" for k, (c, us) in inside if c / RUNS >= 0.05))
