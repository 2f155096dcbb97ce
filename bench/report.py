#!/usr/bin/env python3
"""Print the table of a benchmark run and write it as JSON.

usage: report.py core|fleet WORK_DIR VERSIONS_JSON

Reads the measure.py results under WORK_DIR/<bench>/ and writes WORK_DIR/<bench>.json.
Targets are reported as met / missed / n/a; nothing here fails a run.
"""

import datetime
import json
import math
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt_s(r):
    if not r:
        return "n/a"
    if not r.get("ok") or "mean_s" not in r:
        return "failed: " + r.get("error", "no runs")
    single = len(r.get("runs", [])) == 1 or r.get("single", False)
    if r["mean_s"] < 1:
        m, sd, unit = r["mean_s"] * 1000, r["stddev_s"] * 1000, "ms"
        return f"{m:.0f} {unit}" if single else f"{m:.0f} ± {sd:.0f} {unit}"
    return f"{r['mean_s']:.2f} s" if single else f"{r['mean_s']:.2f} ± {r['stddev_s']:.2f} s"


def mean(r):
    return r["mean_s"] if r and r.get("ok") and "mean_s" in r else None


def combine(name, parts, note=""):
    """A row that is the sum of other rows (means add, variances add)."""
    if not parts or any(mean(p) is None for p in parts):
        return None
    return {"name": name, "ok": True, "derived": note,
            "mean_s": sum(p["mean_s"] for p in parts),
            "stddev_s": math.sqrt(sum(p["stddev_s"] ** 2 for p in parts)),
            "runs": [], "max_rss_mib": max(p.get("max_rss_mib", 0) for p in parts),
            "single": all(len(p.get("runs", [])) == 1 for p in parts)}


def ratio(num, den):
    if num is None or den is None or den <= 0:
        return None
    return num / den


def main():
    bench, work, versions = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    d = os.path.join(work, bench)
    r = {}
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".json") and not fn.endswith(".stdout.json"):
            x = load(os.path.join(d, fn))
            if isinstance(x, dict) and "name" in x and "runs" in x:
                r[x["name"]] = x
    tree = load(os.path.join(work, "moodle-tree.stats.json")) or {}
    extra = load(os.path.join(d, "extra.json")) or {}
    sizes = load(os.path.join(d, "sizes.json")) or {}

    rows = []  # (label, result)
    figures = []  # (label, value, op, target, unit)
    if bench == "core":
        bp = combine("buildah-bud+push", [r.get("buildah-bud"), r.get("buildah-push-oci")],
                     "sum of the two means")
        rows = [("tar | pigz -p2 | sha256sum (the limit)", r.get("pigz-pipeline")),
                ("imgbuild build, cold", r.get("imgbuild-cold")),
                ("imgbuild build, no change", r.get("imgbuild-nochange")),
                ("buildah bud (COPY, vfs, chroot)", r.get("buildah-bud")),
                ("buildah push oci: (gzip)", r.get("buildah-push-oci")),
                ("buildah bud + push (sum)", bp)]
        img = mean(r.get("imgbuild-cold"))
        rss = [x.get("max_rss_mib") for x in (r.get("imgbuild-cold"), r.get("imgbuild-nochange"))
               if x and x.get("ok") and "max_rss_mib" in x]
        figures = [
            ("imgbuild cold / pigz pipeline", ratio(img, mean(r.get("pigz-pipeline"))), "<=", 1.0, "x"),
            ("buildah bud / imgbuild cold", ratio(mean(r.get("buildah-bud")), img), ">=", 5.0, "x"),
            ("buildah bud+push / imgbuild cold", ratio(mean(bp), img), ">=", 5.0, "x"),
            ("imgbuild no-change rebuild", mean(r.get("imgbuild-nochange")), "<=", 0.2, "s"),
            ("imgbuild peak RSS", max(rss) if rss else None, "<=", 256.0, "MiB"),
            ("buildah bud / pigz pipeline", ratio(mean(r.get("buildah-bud")), mean(r.get("pigz-pipeline"))), None, None, "x"),
        ]
    else:
        n = extra.get("clients", 50)
        bt = combine("buildah-fleet-total", [r.get("buildah-moodle"), r.get("buildah-clients")],
                     "moodle once + the clients")
        rows = [("imgbuild build --all, cold", r.get("imgbuild-fleet-cold")),
                ("imgbuild build --all, no change", r.get("imgbuild-fleet-nochange")),
                ("imgbuild build --all, one client file changed", r.get("imgbuild-fleet-change")),
                ("buildah bud moodle (once)", r.get("buildah-moodle")),
                (f"buildah bud {n} clients FROM moodle", r.get("buildah-clients")),
                ("buildah total: moodle + clients", bt),
                ("buildah bud one changed client", r.get("buildah-change"))]
        img = mean(r.get("imgbuild-fleet-cold"))
        rss = [x.get("max_rss_mib") for x in (r.get("imgbuild-fleet-cold"), r.get("imgbuild-fleet-change"))
               if x and x.get("ok") and "max_rss_mib" in x]
        figures = [
            ("buildah (moodle + clients) / imgbuild cold", ratio(mean(bt), img), ">=", 5.0, "x"),
            ("buildah clients only / imgbuild cold", ratio(mean(r.get("buildah-clients")), img), None, None, "x"),
            ("imgbuild rebuild after one change", mean(r.get("imgbuild-fleet-change")), "<=", 0.5, "s"),
            ("buildah one client / imgbuild after one change",
             ratio(mean(r.get("buildah-change")), mean(r.get("imgbuild-fleet-change"))), ">=", 5.0, "x"),
            ("imgbuild no-change build --all", mean(r.get("imgbuild-fleet-nochange")), None, None, "s"),
            ("imgbuild peak RSS", max(rss) if rss else None, "<=", 256.0, "MiB"),
        ]

    loads = [x["mean_load1"] for x in r.values() if x.get("ok") and "mean_load1" in x]
    now = os.environ.get("BENCH_STARTED") or datetime.datetime.now(
        datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print(f"imgbuild {bench} benchmark, started {now}; {versions.get('nproc')} cores, "
          f"{versions.get('mem_gib')} GiB, kernel {versions.get('kernel')}; "
          f"{versions.get('imgbuild') or 'no imgbuild'} at {versions.get('git_rev') or '?'}")
    if tree:
        print(f"tree: {tree.get('files', 0):,} files + {tree.get('symlinks', 0)} symlinks in "
              f"{tree.get('dirs', 0):,} dirs, {tree.get('bytes', 0) / 2**20:.1f} MiB (seed {tree.get('seed')})")
    if extra.get("clients"):
        print(f"fleet: moodle + {extra['clients']} clients of {extra.get('client_files', '?')} files, "
              f"{extra.get('client_mib', 0):.1f} MiB each")
    if loads and max(loads) > 1.25 * (versions.get("nproc") or 1):
        print(f"note: the machine was busy (1-min load {min(loads):.1f}..{max(loads):.1f} during runs); "
              "absolute times are inflated, the ratios less so")
    print()
    w = max(len(x[0]) for x in rows) + 2
    sizecol = any(isinstance(v, (int, float)) for v in sizes.values())
    print(f"{'tool':<{w}}{'wall (mean ± sd)':<22}{'runs':>5}  {'peak RSS':>9}" + (f"  {'layer':>10}" if sizecol else ""))
    for label, x in rows:
        runs = len(x["runs"]) if x and x.get("runs") else ("-" if x and x.get("derived") else "")
        rss = f"{x['max_rss_mib']:.0f} MiB" if x and x.get("ok") and x.get("max_rss_mib") else ""
        size = sizes.get(x["name"]) if x else None
        size = f"{size / 2**20:.1f} MiB" if isinstance(size, (int, float)) else ""
        print(f"{label:<{w}}{fmt_s(x):<22}{runs!s:>5}  {rss:>9}" + (f"  {size:>10}" if sizecol else ""))
    print()
    w = max(len(f[0]) for f in figures) + 2
    print(f"{'figure':<{w}}{'value':>10}  {'target':<9}{'':<6}")
    out_figs = []
    for label, val, op, target, unit in figures:
        if val is None:
            vs, met = "n/a", None
        else:
            vs = f"{val:.1f} {unit}" if unit != "s" else f"{val:.3f} s"
            met = None if op is None else (val <= target if op == "<=" else val >= target)
        ts = f"{op} {target:g}" if op else "(info)"
        ms = "" if met is None else ("met" if met else "MISSED")
        print(f"{label:<{w}}{vs:>10}  {ts:<9}{ms}")
        out_figs.append({"figure": label, "value": val, "unit": unit, "op": op,
                         "target": target, "met": met})
    print()

    report = {"benchmark": bench, "date": now, "machine": versions, "tree": tree,
              "fleet": extra or None, "layer_bytes": sizes or None,
              "results": {k: {kk: vv for kk, vv in v.items() if kk != "stderr_tail"} | (
                  {"stderr_tail": v["stderr_tail"]} if "stderr_tail" in v else {})
                  for k, v in r.items()},
              "derived": {x["name"]: x for _, x in rows if x and x.get("derived")},
              "figures": out_figs}
    path = os.path.join(work, f"{bench}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
