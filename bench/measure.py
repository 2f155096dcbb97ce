#!/usr/bin/env python3
"""Run a shell command a few times; report wall time and peak RSS as JSON.

usage: measure.py --name NAME --out FILE [--runs N] [--warmup W] [--append]
                  [--prepare CMD] [--cleanup CMD] -- CMD

Each run is `/usr/bin/time bash -c CMD`: wall time from a monotonic clock,
user/sys CPU and the peak resident set size from GNU time, the number that
`time -v` prints as "Maximum resident set size": the largest single process
among the command and the children it waited for, not their sum. When GNU
time's output cannot be read, these are null (never 0), and so is the
result's max_rss_mib: the reports print n/a.

--prepare runs (untimed) before every run, warm-ups included; --cleanup after
every run. --append adds the runs to those already in FILE, so that callers can
interleave tools round by round (tool A run 1, tool B run 1, tool A run 2, ...)
and a busy machine weighs on every tool alike. The 1-minute load average at the
start of each run is recorded, to tell a quiet machine from a busy one. A failing run is recorded (exit status, last lines of stderr) and
ends the measurement: the JSON then has "ok": false. This script never fails
because a measured command failed; it exits 0 and says so in the JSON.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

GNU_TIME = os.environ.get("GNU_TIME", "/usr/bin/time")


def sh(cmd: str) -> None:
    subprocess.run(["bash", "-c", cmd], check=True)


def run_once(cmd: str, stderr_path: str) -> dict:
    """One run under GNU time, whose own footprint is small, unlike a fork of Python
    (a forked interpreter would be counted in the peak RSS)."""
    rus_path = stderr_path + ".rusage"
    with open(stderr_path, "wb") as err:
        t0 = time.monotonic()
        proc = subprocess.run([GNU_TIME, "-f", "%M %U %S", "-o", rus_path, "bash", "-c", cmd],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        wall = time.monotonic() - t0
    try:
        with open(rus_path) as f:
            last = f.read().strip().splitlines()[-1].split()
        os.unlink(rus_path)
        rss, user, sys_ = int(last[0]), float(last[1]), float(last[2])
    except (OSError, ValueError, IndexError):
        # Not measured: null, never 0, so that no report counts it as small.
        rss, user, sys_ = None, None, None
    if rss is not None and rss <= 0:
        rss = None
    return {"wall_s": wall, "user_s": user, "sys_s": sys_, "max_rss_kib": rss,
            "exit": proc.returncode}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--prepare", default="")
    ap.add_argument("--cleanup", default="")
    ap.add_argument("--append", action="store_true")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = " ".join(a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd)
    if not cmd:
        ap.error("no command")

    stderr_path = a.out + ".stderr"
    res = {"name": a.name, "command": cmd, "prepare": a.prepare, "runs": [], "ok": True}
    if a.append and os.path.exists(a.out):
        with open(a.out) as f:
            res = json.load(f)
        if not res.get("ok"):
            print(f"  {a.name}: skipped, an earlier run failed", file=sys.stderr)
            return 0
    total = a.warmup + a.runs
    for i in range(total):
        warm = i < a.warmup
        if a.prepare:
            sh(a.prepare)
        with open("/proc/loadavg") as f:
            load = float(f.read().split()[0])
        r = run_once(cmd, stderr_path)
        r["load1"] = load
        if a.cleanup:
            sh(a.cleanup)
        tag = "warmup" if warm else f"run {len(res['runs']) + 1}"
        peak = "n/a" if r["max_rss_kib"] is None else f"{r['max_rss_kib'] / 1024:.0f} MiB"
        print(f"  {a.name}: {tag}: {r['wall_s']:.3f} s, "
              f"peak RSS {peak}, exit {r['exit']}, load {load:.1f}",
              file=sys.stderr)
        if r["exit"] != 0:
            with open(stderr_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            res.update(ok=False, error=f"exit status {r['exit']}", stderr_tail=tail)
            print(f"  {a.name}: FAILED (exit {r['exit']}); stderr tail:\n{tail}", file=sys.stderr)
            break
        if not warm:
            res["runs"].append(r)
    walls = [r["wall_s"] for r in res["runs"]]
    if walls and res["ok"]:
        res.update(
            mean_s=statistics.fmean(walls),
            stddev_s=statistics.stdev(walls) if len(walls) > 1 else 0.0,
            min_s=min(walls), max_s=max(walls),
            median_s=statistics.median(walls),
            # null unless GNU time gave every run's peak RSS
            max_rss_mib=(None if any(r["max_rss_kib"] is None for r in res["runs"])
                         else max(r["max_rss_kib"] for r in res["runs"]) / 1024),
            mean_load1=statistics.fmean(r["load1"] for r in res["runs"]),
        )
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
