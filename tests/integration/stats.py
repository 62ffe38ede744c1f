#!/usr/bin/python3
"""Checks the shim's per-process stats files (SDX_STATS_FILE=DIR/%p.json) of one role of a case.

usage: stats.py DIR PROGRAM [--need-calls a,b,...] [--forbid-calls a,b,...] [--no-data]

Passes when some file of DIR whose "program" is PROGRAM (or a process title starting with "PROGRAM " or "PROGRAM: ") has sockets.tracked > 0 and a non-zero
count of at least one data call (read/recv/write/send/... on tracked inet stream sockets), and, with
--need-calls, when the named calls sum to a non-zero count over PROGRAM's files; --forbid-calls
requires them to be zero in all of PROGRAM's files; --no-data drops the data call requirement (for
a listener whose connections are served by other, exec'd processes). Every file in DIR must be valid JSON of the
documented shape. Prints a one-line summary.
"""
import json
import os
import sys

DATA_CALLS = {
    "read", "readv", "__read_chk", "recv", "__recv_chk", "recvfrom", "__recvfrom_chk", "recvmsg",
    "recvmmsg", "write", "writev", "send", "sendto", "sendmsg", "sendmmsg", "sendfile",
    "sendfile64", "splice",
}


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    d, prog = args[0], args[1]
    need = forbid = []
    need_data = True
    rest = args[2:]
    while rest:
        if rest[0] == "--no-data":
            need_data = False
            rest = rest[1:]
            continue
        if rest[0] == "--need-calls" and len(rest) > 1:
            need = rest[1].split(",")
        elif rest[0] == "--forbid-calls" and len(rest) > 1:
            forbid = rest[1].split(",")
        else:
            sys.exit(__doc__)
        rest = rest[2:]
    if not os.path.isdir(d):
        sys.exit(f"no stats directory {d}")
    files = sorted(f for f in os.listdir(d) if f.endswith(".json"))
    if not files:
        sys.exit(f"no stats file in {d} (was the shim loaded? SDX_STATS=1 set?)")
    mine, progs = [], []
    for f in files:
        path = os.path.join(d, f)
        try:
            with open(path) as fh:
                s = json.load(fh)
            tracked = int(s["sockets"]["tracked"])
            int(s["sockets"]["accelerated"])
            calls = {k: int(v) for k, v in s["calls"].items()}
            program = s["program"]
            int(s["pid"])
        except Exception as e:  # noqa: BLE001 - any malformation is a failure
            sys.exit(f"{f}: bad stats file ({type(e).__name__}: {e}): {open(path).read()[:300]!r}")
        if tracked <= 0:
            sys.exit(f"{f}: sockets.tracked = {tracked}: a file was written for a process without "
                     "tracked sockets")
        progs.append(program)
        # Programs may rewrite their process title: redis-server shows "redis-server HOST:PORT",
        # nginx "nginx: worker process".
        words = program.split()
        if program == prog or (words and os.path.basename(words[0]).rstrip(":") == prog):
            mine.append((f, tracked, calls))
    if not mine:
        sys.exit(f"no stats file for program {prog!r} in {d} (programs: {sorted(set(progs))})")
    best = max(mine, key=lambda m: sum(v for k, v in m[2].items() if k in DATA_CALLS))
    data = sum(v for k, v in best[2].items() if k in DATA_CALLS)
    if need_data and data <= 0:
        sys.exit(f"{prog}: no data call counted on tracked sockets in {len(mine)} file(s); "
                 f"{best[0]}: calls {best[2]}")
    total = {}
    for _, _, calls in mine:
        for k, v in calls.items():
            total[k] = total.get(k, 0) + v
    if need and sum(total.get(c, 0) for c in need) <= 0:
        sys.exit(f"{prog}: none of {need} counted over {len(mine)} file(s): calls {total}")
    bad = {c: total[c] for c in forbid if total.get(c, 0)}
    if bad:
        sys.exit(f"{prog}: calls {bad} counted, expected none: calls {total}")
    shown = {k: v for k, v in sorted(total.items()) if k in DATA_CALLS or k in need}
    print(f"{len(files)} file(s), {len(mine)} of {prog}; tracked {sum(m[1] for m in mine)}; "
          f"data calls {shown}")


if __name__ == "__main__":
    main()
