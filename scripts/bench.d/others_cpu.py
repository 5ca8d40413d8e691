#!/usr/bin/env python3
"""CPU used so far by work that is not the benchmark's, for scripts/bench (Linux, stdlib only).

Prints "<clock ticks> <ticks per second> <monotonic seconds>"; the difference of two readings
is what other work took from the machine in between. Counted: every process outside this
session (the benchmark's own processes share its session), its own time plus its reaped
children's (so a compiler that came and went is counted in its parent). PostgreSQL's backends
are their own sessions: one serving a database named --ours-db-prefix… is the benchmark's,
any other backend is other work, and the server's shared processes (checkpointer, WAL writer…)
are left out as neither.
"""
import argparse, os, time

p = argparse.ArgumentParser()
p.add_argument("--ours-db-prefix", default="\0")
a = p.parse_args()
sid = os.getsid(0)
total = 0
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        with open("/proc/%s/stat" % pid) as f:
            stat = f.read()
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        continue
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()   # fields[0] is field 3 of proc(5)
    if int(fields[3]) == sid:                      # field 6: session
        continue
    if comm == "postgres" or cmdline.startswith("postgres:"):
        # backend title: "postgres: 15/main: <user> <database> <client> <state>"
        words = cmdline.split()
        db = words[3] if len(words) > 4 and cmdline.startswith("postgres:") else None
        if db is None or db.startswith(a.ours_db_prefix):
            continue
    total += sum(int(x) for x in fields[11:15])    # utime, stime, cutime, cstime
print(total, os.sysconf("SC_CLK_TCK"), "%.3f" % time.monotonic())
