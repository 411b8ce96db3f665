#!/usr/bin/env python3
"""A CPU account per run from a `perf record` profile: the self time of each function (and of
each group: kernel, allocator, Lua, a Rust crate, ...) as a share of the samples, times the
process' measured CPU per run.

    python3 bench/perf_account.py <perf.data> <title> <cpu µs per run> [top]   # markdown

The CPU per run comes from the same pass (`INFO cpu` for Redis, `/proc/<pid>/stat` for the
worker), so the µs of the rows add up to it. Self time only: a function's callees are rows of
their own (callgrind gives inclusive costs; see bench/README.md).
"""
import collections
import re
import subprocess
import sys

DATA, TITLE, CPU_US = sys.argv[1], sys.argv[2], float(sys.argv[3])
TOP = int(sys.argv[4]) if len(sys.argv) > 4 else 25

report = subprocess.run(
    ["perf", "report", "-i", DATA, "--no-children", "--sort", "dso,sym", "--stdio", "-q", "-g", "none",
     "--percent-limit", "0"],
    capture_output=True, text=True, check=False)
samples = subprocess.run(["perf", "report", "-i", DATA, "--stdio", "--sort", "dso", "-g", "none"],
                         capture_output=True, text=True, check=False).stdout
rows = []
for line in report.stdout.splitlines():
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$", line)
    if m:
        rows.append((float(m.group(1)), m.group(2), m.group(3), m.group(4)))
if not rows:
    print(f"**{TITLE}**: no samples ({(report.stderr.strip().splitlines() or ['perf report failed'])[-1]})")
    sys.exit(0)

LUA = re.compile(r"^(lua|luaV_|luaH_|luaD_|luaC_|luaS_|luaF_|luaG_|luaK_|luaL_|luaM_|luaO_|luaT_|luaX_|luaY_|luaZ_|"
                 r"luaRedis|luaCall|luaSetResp|luaReplyTo|luaPush|luaRaise|scriptCall|evalGeneric|ldb|lua_|f_|"
                 r"luaI_|luaU_|luaE_|luaA_|luaB_)")
ALLOC = re.compile(r"(__rust_alloc|__rust_dealloc|__rust_realloc|__rustc::|malloc|calloc|realloc|free|_int_|unlink_chunk|tcache|je_|arena_|extent_|sdallocx|mallocx|"
                   r"rallocx|zmalloc|zfree|zrealloc|tcache_|imalloc|ifree)")
COPY = re.compile(r"^__(memmove|memcpy|memset|memcmp|strlen|strcmp|memchr)|^mem(cpy|move|set|cmp|chr)")


def crate(symbol):
    impl = re.match(r"<(.+?) as (.+?)>::", symbol)
    if impl:  # `<Type as Trait>::f`: the type's crate, or the trait's for a primitive or `T`
        return crate(impl.group(1) if "::" in impl.group(1) else impl.group(2))
    s = symbol.lstrip("<&*(").removeprefix("dyn ").removeprefix("mut ")
    head = s.split("::", 1)[0].split("<", 1)[0].strip()
    if s.startswith("core::fmt") or s.startswith("alloc::fmt"):
        return "Rust: core::fmt (formatting)"
    if s.startswith("core::ptr::drop_in_place"):
        return "Rust: drop glue"
    if head in ("combine",):
        return "Rust: combine (redis-rs reply parsing)"
    return f"Rust: {head}" if head else "Rust: ?"


def lua_span():
    """The address range of the Lua interpreter linked into redis-server, from its exported
    symbols: Redis' Lua (lapi.c's `lua_*` first, then the VM, the libraries, cjson) lies
    between `lua_checkstack` and the first symbol after the last `luaopen_*` / `strbuf_*` /
    `fpconv_*`. A stripped distro binary shows Lua's static functions (the VM, string
    interning, the tables) as bare addresses: this puts them in the Lua group."""
    ids = subprocess.run(["perf", "buildid-list", "-i", DATA], capture_output=True, text=True, check=False).stdout
    path = next((l.split(None, 1)[1] for l in ids.splitlines() if "redis-" in l.rsplit("/", 1)[-1]), None)
    if not path:
        return None
    nm = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True, check=False).stdout
    text = sorted((int(p[0], 16), p[2]) for p in (l.split() for l in nm.splitlines())
                  if len(p) == 3 and p[1] in "Tt")
    lua = re.compile(r"^(lua_|luaL_|luaopen_|strbuf_|fpconv_)")
    starts = [a for a, name in text if name == "lua_checkstack"]
    last = max((i for i, (_, name) in enumerate(text) if lua.match(name)), default=None)
    if not starts or last is None or last + 1 >= len(text):
        return None
    return starts[0], text[last + 1][0]


LUA_SPAN = None


def in_lua(symbol):
    global LUA_SPAN
    if LUA_SPAN is None:
        LUA_SPAN = lua_span() or (0, 0)
    try:
        address = int(symbol, 16)
    except ValueError:
        return False
    return LUA_SPAN[0] <= address < LUA_SPAN[1]


def group(dso, kind, symbol):
    if kind == "k" or dso.startswith("[kernel"):
        return "kernel (syscalls, TCP, scheduling)"
    if "jemalloc" in dso or ALLOC.search(symbol):
        return "allocator (malloc/free)"
    if COPY.search(symbol):
        return "libc: memcpy/memmove/…"
    if "redis" in dso:
        return "Lua (scripts)" if LUA.search(symbol) or in_lua(symbol) else "redis-server"
    if "lua" in dso:
        return "Lua (scripts)"
    if dso.startswith("libc") or dso.startswith("ld-linux"):
        return "libc (other)"
    if dso.startswith("[") or symbol.startswith("0x"):
        return f"unresolved ({dso})"
    return crate(symbol)


total = sum(r[0] for r in rows) or 100.0
groups = collections.defaultdict(float)
for share, dso, kind, symbol in rows:
    groups[group(dso, kind, symbol)] += share
m = re.search(r"^# Samples: (\S+)", samples, re.M)
n = f", {m.group(1)} samples" if m else ""
us = lambda share: CPU_US * share / total  # noqa: E731


def short(symbol):
    symbol = re.sub(r"::h[0-9a-f]{16}$", "", symbol)
    return symbol if len(symbol) <= 110 else symbol[:107] + "…"


print(f"**{TITLE}**: {CPU_US:.1f} µs CPU per run{n}")
print()
print("| group | share | µs per run |")
print("|---|---:|---:|")
for name, share in sorted(groups.items(), key=lambda kv: -kv[1]):
    if share / total >= 0.003:
        print(f"| {name} | {100 * share / total:.1f}% | {us(share):.2f} |")
print()
print(f"| function (self time, top {TOP}) | in | share | µs per run |")
print("|---|---|---:|---:|")
for share, dso, kind, symbol in rows[:TOP]:
    where = "kernel" if kind == "k" else ("redis-server" if dso.startswith("redis-") else dso)
    if where == "redis-server" and symbol.startswith("0x") and in_lua(symbol):
        where = "redis-server (Lua, stripped)"
    print(f"| `{short(symbol)}` | {where} | {100 * share / total:.1f}% | {us(share):.2f} |")
