#!/usr/bin/env python3
"""Print the table of a benchmark run and write it as JSON.

usage: report.py core|fleet|push|lines WORK_DIR VERSIONS_JSON

Reads the measure.py results under WORK_DIR/<bench>/ (for push, also what
registry.py recorded about each push: runs.jsonl, layout.json, ...) and writes
WORK_DIR/<bench>.json.
Targets are reported as met / missed / n/a; nothing here fails a run.
"""

import datetime
import json
import math
import os
import sys


from results import cpu_s, load, peak_rss, rss_mib  # the bench scripts' shared reading


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
            "runs": [], "max_rss_mib": peak_rss(parts),
            "single": all(len(p.get("runs", [])) == 1 for p in parts)}


def one_layer_rebuilt(x, built_path):
    """The mean time of the one-change rebuild, when every timed run's
    `build --json` said exactly one layer was built (fleet.sh writes one
    count a line, in run order); else None and why, since a time of a build
    that rebuilt nothing (or everything) is not the figure's."""
    if mean(x) is None:
        return None, None
    try:
        with open(built_path) as f:
            counts = [line.strip() for line in f if line.strip()]
    except OSError:
        return None, f"{os.path.basename(built_path)} is missing: no run was checked for a rebuilt layer"
    runs = len(x["runs"])
    if len(counts) < runs or any(c != "1" for c in counts[-runs:]):
        return None, (f"layers built per run {counts[-runs:] or 'none'} over {runs} runs, "
                      "expected exactly 1 each")
    return mean(x), None


def ratio(num, den):
    if num is None or den is None or den <= 0:
        return None
    return num / den


def load_lines(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
    except (OSError, ValueError):
        pass
    return out


def push_details(d):
    """What registry.py recorded about the pushes of bench/push.sh."""
    return {"layout": load(os.path.join(d, "layout.json")),
            "big_layout": load(os.path.join(d, "big-layout.json")),
            "tags_imgbuild": load(os.path.join(d, "tags-imgbuild.json")),
            "tags_skopeo": load(os.path.join(d, "tags-skopeo.json")),
            "records": load_lines(os.path.join(d, "runs.jsonl"))}


def records(push, kind):
    return [x for x in push["records"] if x.get("kind") == kind]


def counted(push, kind):
    """The proxy's counters of the (untimed) counted push of this kind."""
    rec = records(push, kind)
    return rec[-1].get("counts") if rec else None


def span(values, fmt="{:.0f}"):
    """One value, or lo..hi when the runs differ."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}..{fmt.format(hi)}"


def mib(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def over(sent, base):
    """How much more than `base` was sent, in per cent."""
    if sent is None or not base:
        return None
    return (sent / base - 1) * 100


# result name -> (kind of its timed records, kind of its counted record)
PUSH_KINDS = {"imgbuild-push-fleet": ("imgbuild-push", "imgbuild-push-counted"),
              "imgbuild-push-fleet-again": ("imgbuild-again", "imgbuild-again-counted"),
              "skopeo-push-fleet": ("skopeo-push", "skopeo-push-counted"),
              "imgbuild-tag": ("imgbuild-tag", None),
              "skopeo-tag": ("skopeo-tag", None),
              "imgbuild-push-big": ("imgbuild-big", "imgbuild-big-counted"),
              "skopeo-push-big": ("skopeo-big", "skopeo-big-counted")}


def push_rows(r, extra, push):
    n = extra.get("clients", 50)
    big = extra.get("big_mib", 300)
    tag = (push.get("tags_imgbuild") or push.get("tags_skopeo") or {}).get("tag", "5.1.4")
    rows = [(f"imgbuild push --all, {n + 1} images", r.get("imgbuild-push-fleet")),
            ("imgbuild push --all again", r.get("imgbuild-push-fleet-again")),
            (f"skopeo copy x {n + 1} (loop)", r.get("skopeo-push-fleet")),
            (f"imgbuild tag x {n} (loop)", r.get("imgbuild-tag")),
            (f"skopeo copy :latest :{tag} x {n} (loop)", r.get("skopeo-tag")),
            (f"imgbuild push, one {big} MiB layer", r.get("imgbuild-push-big")),
            (f"skopeo copy, one {big} MiB layer", r.get("skopeo-push-big"))]
    sent, blobs, cpu, reg_cpu = {}, {}, {}, {}
    for name, (kind, ckind) in PUSH_KINDS.items():
        c = counted(push, ckind) if ckind else None
        if c:
            sent[name] = mib(c["up_bytes"])
        x = r.get(name)
        if x and x.get("ok") and x.get("runs"):
            c = cpu_s(x)
            cpu[name] = "n/a" if c is None else f"{c:.2f} s"
        recs = records(push, kind)
        if recs:
            # tag records cover all the timed loops: per loop
            per = [max(y.get("round") or 1, 1) if kind.endswith("-tag") else 1 for y in recs]
            blobs[name] = (span([y["log"]["uploads"] / p for y, p in zip(recs, per)]) + "/"
                           + span([y["log"]["mounts"] / p for y, p in zip(recs, per)]))
            rc = [y["registry_cpu_s"] / p for y, p in zip(recs, per) if y.get("registry_cpu_s") is not None]
            if rc:
                reg_cpu[name] = f"{sum(rc) / len(rc):.2f} s"
    cols = [("CPU", 7, cpu), ("reg. CPU", 8, reg_cpu), ("sent", 10, sent), ("up/mnt", 9, blobs)]

    lay = push.get("layout") or {}
    blay = push.get("big_layout") or {}
    ic, sc = counted(push, "imgbuild-push-counted"), counted(push, "skopeo-push-counted")
    again = [x["log"]["uploads"] for x in records(push, "imgbuild-again")]
    ac = counted(push, "imgbuild-again-counted")
    bic, bsc = counted(push, "imgbuild-big-counted"), counted(push, "skopeo-big-counted")
    rss = rss_mib  # None (n/a) unless GNU time gave every run's figure
    ti, ts = push.get("tags_imgbuild"), push.get("tags_skopeo")
    figures = [
        ("imgbuild push --all / skopeo loop", ratio(mean(r.get("imgbuild-push-fleet")),
                                                    mean(r.get("skopeo-push-fleet"))), "<=", 0.5, "x", "{:.2f}"),
        ("imgbuild bytes sent over unique blobs", over(ic and ic["up_bytes"], lay.get("blob_bytes")),
         "<=", 2.0, "%", "{:+.2f}"),
        ("imgbuild blob bodies over unique blobs", over(ic and ic["blob_body_bytes"], lay.get("blob_bytes")),
         None, None, "%", "{:+.2f}"),
        ("skopeo bytes sent over unique blobs", over(sc and sc["up_bytes"], lay.get("blob_bytes")),
         None, None, "%", "{:+.2f}"),
        ("blobs uploaded by push --all again", max(again) if again else None, "==", 0, "", "{:.0f}"),
        ("bytes sent by push --all again", ac["up_bytes"] / 1024 if ac else None, None, None, "KiB", "{:.0f}"),
        (f"imgbuild tag x {n}, total", mean(r.get("imgbuild-tag")), "<=", 2.0, "s"),
        (f"tags :{tag} = :latest after imgbuild tag", ti["same"] if ti else None, "==", n, "", "{:.0f}"),
        ("skopeo tag loop / imgbuild tag loop", ratio(mean(r.get("skopeo-tag")), mean(r.get("imgbuild-tag"))),
         None, None, "x"),
        (f"imgbuild peak RSS, {big} MiB layer push", rss(r.get("imgbuild-push-big")), "<=", 256.0, "MiB"),
        (f"skopeo peak RSS, {big} MiB layer push", rss(r.get("skopeo-push-big")), None, None, "MiB"),
        (f"imgbuild / skopeo, {big} MiB layer push", ratio(mean(r.get("imgbuild-push-big")),
                                                       mean(r.get("skopeo-push-big"))), None, None, "x", "{:.2f}"),
        (f"imgbuild bytes sent over blobs, {big} MiB", over(bic and bic["up_bytes"], blay.get("blob_bytes")),
         None, None, "%", "{:+.2f}"),
        (f"skopeo bytes sent over blobs, {big} MiB", over(bsc and bsc["up_bytes"], blay.get("blob_bytes")),
         None, None, "%", "{:+.2f}"),
    ]
    if ts:
        figures.insert(8, (f"tags :{tag} = :latest after skopeo copy", ts["same"], None, None, "", "{:.0f}"))
    return rows, figures, cols


def push_notes(push, extra):
    """Lines under the header: what is pushed, and what the registry received."""
    out = []
    lay, blay = push.get("layout"), push.get("big_layout")
    if lay:
        out.append(f"unique blobs of the {lay['images']} images: {lay['blobs']} (configs and layers), "
                   f"{mib(lay['blob_bytes'])}, largest {mib(lay['largest_blob'])}; "
                   f"{lay['manifests']} manifests, {mib(lay['manifest_bytes'])}")
    if blay:
        out.append(f"big image: {extra.get('big_mib', '?')} MiB of random bytes, blobs {mib(blay['blob_bytes'])}")
    out.append("CPU: user + system of the command; reg. CPU: of docker-registry meanwhile; sent: bytes the "
               "registry received (counted push); up/mnt: blobs uploaded / mounted (registry log)")
    for kind, what in (("imgbuild-push-counted", "imgbuild push --all"),
                       ("imgbuild-again-counted", "imgbuild push --all again"),
                       ("skopeo-push-counted", "skopeo loop"),
                       ("imgbuild-big-counted", "imgbuild push big"),
                       ("skopeo-big-counted", "skopeo copy big")):
        rec = records(push, kind)
        if not rec or not rec[-1].get("counts"):
            continue
        if not any(line.startswith("  ") for line in out):
            out.append("through the counting proxy (one more push per tool, not timed):")
        c, lg = rec[-1]["counts"], rec[-1]["log"]
        out.append(f"  {what}: {c['requests']} requests on {c['connections']} connections, "
                   f"sent {c['up_bytes']:,} B (heads {c['head_bytes']:,}, blob bodies "
                   f"{c['blob_body_bytes']:,}, manifests {c['manifest_body_bytes']:,}), "
                   f"received {c['down_bytes']:,} B; {lg['uploads']} uploads, {lg['mounts']} mounts, "
                   f"{lg['blob_heads']} blob HEADs")
    return out


def synth(name, values):
    """A row from seconds measured outside measure.py (web.jsonl)."""
    if not values:
        return None
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"name": name, "ok": True, "mean_s": m, "stddev_s": sd, "max_s": max(values),
            "runs": [{"wall_s": v, "max_rss_kib": None} for v in values]}


def lines_rows(r, extra, d):
    """bench/lines.sh: the fleet on two release lines."""
    n, n45 = extra.get("clients", 50), extra.get("clients_45", 25)
    notes = []
    cores = extra.get("cores") or {}
    if cores:
        c45, c51 = cores.get("moodle-45", {}), cores.get("moodle-51", {})
        notes.append(f"cores: 4.5 {c45.get('files', 0):,} files {c45.get('bytes', 0) / 2**20:.0f} MiB, "
                     f"5.1 {c51.get('files', 0):,} files {c51.get('bytes', 0) / 2**20:.0f} MiB (git: sources); "
                     f"clients: {n} ({n45} on 4.5) of {extra.get('client_files', '?')} files, "
                     f"{extra.get('client_mib', 0):.1f} MiB; a minor release changes "
                     f"{extra.get('changed_per_minor', '?')} files")
    change, why = one_layer_rebuilt(r.get("imgbuild-change"), os.path.join(d, "imgbuild-change.built"))
    if why:
        notes.append(f"imgbuild after one change: n/a, {why}")
    plans = load_lines(os.path.join(d, "minor-plan.jsonl"))
    built = load_lines(os.path.join(d, "minor-built.jsonl"))
    ups = load_lines(os.path.join(d, "minor-uploads.jsonl"))
    for what, recs in (("plan", plans), ("build --json", built), ("registry log", ups)):
        for i, x in enumerate(recs, 1):
            if "error" in x:
                notes.append(f"minor release {i}: {what}: {x['error']}")
    plans = [x for x in plans if "error" not in x]
    built = [x for x in built if "error" not in x]
    ups = [x for x in ups if "error" not in x]
    for i, x in enumerate(ups, 1):
        notes.append(f"minor release {i}, registry log: {x['client_layer_uploads']} client layer uploads, "
                     f"{x['config_uploads']} config uploads, {x['core_layer_uploads_into_clients']} core layer "
                     f"uploads into client repositories, {x['mounts_into_clients']} mounts into them, "
                     f"{x['core_repo_uploads']} uploads into the core's, {x['manifest_puts']} manifests put")
    minor_runs = len((r.get("imgbuild-minor") or {}).get("runs", []))
    complete = minor_runs and len(built) == minor_runs and len(ups) == minor_runs
    web = load_lines(os.path.join(d, "web.jsonl"))
    for x in web:
        if not x.get("ok"):
            notes.append(f"web: {x.get('image')} {x.get('kind')}: {x.get('error')}")

    def web_row(image, kind):
        vals = [x["seconds"] for x in web if x.get("image") == image and x.get("kind") == kind]
        fails = [x for x in web if x.get("image") == image and x.get("kind") == kind and not x.get("ok")]
        return None if fails else synth(f"{image}-{kind}", vals)

    wi, wa = web_row("client-initech", "web"), web_row("client-acme", "web")
    pi, pa = web_row("client-initech", "php-s"), web_row("client-acme", "php-s")
    minor, alone = mean(r.get("imgbuild-minor")), mean(r.get("imgbuild-core-alone"))
    rows = [(f"imgbuild build --all --push, {n + 2} images, cold", r.get("imgbuild-full")),
            (f"buildah bud + push, 2 cores + {n} clients", r.get("buildah-full")),
            ("imgbuild build --all --push, one client changed", r.get("imgbuild-change")),
            ("buildah bud + push, the changed client", r.get("buildah-change")),
            ("imgbuild build moodle-4.5, new release (alone)", r.get("imgbuild-core-alone")),
            ("imgbuild build --all --push, new 4.5 release", r.get("imgbuild-minor")),
            ("client-initech (4.5, Apache) run -d to 200", wi),
            ("  same image, php -S (peer)", pi),
            ("client-acme (5.1, nginx) run -d to 200", wa),
            ("  same image, php -S (peer)", pa)]
    figures = [
        ("buildah / imgbuild, all built and pushed", ratio(mean(r.get("buildah-full")), mean(r.get("imgbuild-full"))),
         ">=", 5.0, "x"),
        ("imgbuild one change rebuilt and pushed (1 layer)", change, "<=", 1.0, "s"),
        ("buildah / imgbuild, one change", ratio(mean(r.get("buildah-change")), change), None, None, "x"),
        ("minor release - new core alone", None if minor is None or alone is None else minor - alone,
         "<=", 2.0, "s"),
        ("minor release / new core alone", ratio(minor, alone), None, None, "x", "{:.2f}"),
        ("client layers built (minor release, max)",
         max(x["client_layers_built"] for x in built) if complete else None, "==", 0, "", "{:.0f}"),
        ("client layer blobs uploaded (registry log, max)",
         max(x["client_layer_uploads"] for x in ups) if complete else None, "==", 0, "", "{:.0f}"),
        ("plan: 4.5 clients re-pointed, no layer built (min)",
         min(x["clients_repointed"] for x in plans) if plans else None, "==", n45, "", "{:.0f}"),
        ("plan: 4.5 clients it says are re-pointed (min)",
         min(x["clients_saying_repointed"] for x in plans) if plans else None, "==", n45, "", "{:.0f}"),
        ("client-initech first 200 (max of runs)", wi and wi["max_s"], "<=", 2.0, "s"),
        ("client-acme first 200 (max of runs)", wa and wa["max_s"], "<=", 2.0, "s"),
        ("client-initech / php -S peer", ratio(mean(wi), mean(pi)), None, None, "x", "{:.2f}"),
        ("client-acme / php -S peer", ratio(mean(wa), mean(pa)), None, None, "x", "{:.2f}"),
    ]
    return rows, figures, notes


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
    figures = []  # (label, value, op, target, unit[, format of the value])
    cols = []  # more columns: (header, width, {result name: text})
    notes = []  # lines under the header: figures left n/a, and why
    push = None
    if bench == "core":
        bp = combine("buildah-bud+push", [r.get("buildah-bud"), r.get("buildah-push-oci")],
                     "sum of two separately measured means, not one run")
        rows = [("tar | pigz -p2 | sha256sum (the limit)", r.get("pigz-pipeline")),
                ("imgbuild build, cold", r.get("imgbuild-cold")),
                ("imgbuild build, no change", r.get("imgbuild-nochange")),
                ("buildah bud (COPY, vfs, chroot)", r.get("buildah-bud")),
                ("buildah push oci: (gzip)", r.get("buildah-push-oci")),
                ("buildah bud + push (sum of 2 means)", bp)]
        img = mean(r.get("imgbuild-cold"))
        rss = peak_rss([r.get("imgbuild-cold"), r.get("imgbuild-nochange")])
        figures = [
            ("imgbuild cold / pigz pipeline", ratio(img, mean(r.get("pigz-pipeline"))), "<=", 1.0, "x"),
            ("buildah bud / imgbuild cold", ratio(mean(r.get("buildah-bud")), img), ">=", 5.0, "x"),
            ("buildah bud+push (sum of means) / imgbuild cold", ratio(mean(bp), img), ">=", 5.0, "x"),
            ("imgbuild no-change rebuild", mean(r.get("imgbuild-nochange")), "<=", 0.2, "s"),
            ("imgbuild peak RSS", rss, "<=", 256.0, "MiB"),
            ("buildah bud / pigz pipeline", ratio(mean(r.get("buildah-bud")), mean(r.get("pigz-pipeline"))), None, None, "x"),
        ]
    elif bench == "push":
        push = push_details(d)
        rows, figures, cols = push_rows(r, extra, push)
    elif bench == "lines":
        rows, figures, notes = lines_rows(r, extra, d)
        tree = {}
    else:
        n = extra.get("clients", 50)
        bt = combine("buildah-fleet-total", [r.get("buildah-moodle"), r.get("buildah-clients")],
                     "sum of two separately measured means (moodle once, the clients), not one run")
        rows = [("imgbuild build --all, cold", r.get("imgbuild-fleet-cold")),
                ("imgbuild build --all, no change", r.get("imgbuild-fleet-nochange")),
                ("imgbuild build --all, one client file changed", r.get("imgbuild-fleet-change")),
                ("buildah bud moodle (once)", r.get("buildah-moodle")),
                (f"buildah bud {n} clients FROM moodle", r.get("buildah-clients")),
                ("buildah total: moodle + clients (sum of 2 means)", bt),
                ("buildah bud one changed client", r.get("buildah-change"))]
        img = mean(r.get("imgbuild-fleet-cold"))
        rss = peak_rss([r.get("imgbuild-fleet-cold"), r.get("imgbuild-fleet-change")])
        change, why = one_layer_rebuilt(r.get("imgbuild-fleet-change"),
                                        os.path.join(d, "imgbuild-change.built"))
        if why:
            notes.append(f"imgbuild after one change: n/a, {why}")
        figures = [
            ("buildah (sum of moodle and clients means) / imgbuild cold", ratio(mean(bt), img), ">=", 5.0, "x"),
            ("buildah clients only / imgbuild cold", ratio(mean(r.get("buildah-clients")), img), None, None, "x"),
            ("imgbuild rebuild after one change (1 layer)", change, "<=", 0.5, "s"),
            ("buildah one client / imgbuild after one change",
             ratio(mean(r.get("buildah-change")), change), ">=", 5.0, "x"),
            ("imgbuild no-change build --all", mean(r.get("imgbuild-fleet-nochange")), None, None, "s"),
            ("imgbuild peak RSS", rss, "<=", 256.0, "MiB"),
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
    if push:
        for line in push_notes(push, extra):
            print(line)
    for line in notes:
        print(f"note: {line}")
    print()
    w = max(len(x[0]) for x in rows) + 2
    if any(isinstance(v, (int, float)) for v in sizes.values()):
        cols.append(("layer", 10, {k: f"{v / 2**20:.1f} MiB" for k, v in sizes.items()
                                   if isinstance(v, (int, float))}))
    print(f"{'tool':<{w}}{'wall (mean ± sd)':<22}{'runs':>5}  {'peak RSS':>9}"
          + "".join(f"  {h:>{cw}}" for h, cw, _ in cols))
    for label, x in rows:
        runs = len(x["runs"]) if x and x.get("runs") else ("-" if x and x.get("derived") else "")
        peak = rss_mib(x) if x and not x.get("derived") else (x or {}).get("max_rss_mib")
        rss = "" if not (x and x.get("ok")) else ("n/a" if peak is None else f"{peak:.0f} MiB")
        more = "".join(f"  {(vals.get(x['name'], '') if x else ''):>{cw}}" for _, cw, vals in cols)
        print(f"{label:<{w}}{fmt_s(x):<22}{runs!s:>5}  {rss:>9}" + more)
    print()
    w = max(len(f[0]) for f in figures) + 2
    print(f"{'figure':<{w}}{'value':>10}  {'target':<9}{'':<6}")
    out_figs = []
    for label, val, op, target, unit, *fmt in figures:
        if val is None:
            vs, met = "n/a", None
        else:
            if fmt:
                vs = f"{fmt[0].format(val)} {unit}".strip()
            else:
                vs = f"{val:.1f} {unit}" if unit != "s" else f"{val:.3f} s"
            met = None if op is None else (val <= target if op == "<=" else
                                           val >= target if op == ">=" else val == target)
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
    if push:
        report["push"] = push
    path = os.path.join(work, f"{bench}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
