#!/usr/bin/env bash
# sandbox.sh: the `run:` step benchmark. One step that touches a single file in a
# ~350 MiB Debian root filesystem (bench/mkrootfs.sh, mmdebstrap), timed in one run
# for imgbuild with namespace isolation (an overlay over the cached parent), imgbuild
# with chroot isolation (a copy of it) and buildah (`RUN`, chroot isolation, vfs).
# Records imgbuild's phases (prepare = materialising the cached parent, snapshot),
# checks that a step cannot change the cached parent, and prints ratios against the
# targets. A report: a tool that fails or is missing shows as n/a or failed; but a
# step that changed the cached parent fails the run (exit 1).
#
# Environment: RUNS (5) timed step builds per tool, BUILDAH_WARMUP (1), IMGBUILD, IMGBUILD_REV,
# IMGBUILD_NO_BUILD=1, SKIP_IMGBUILD=1, SKIP_BUILDAH=1, BUILDAH_DRIVER (vfs),
# ISOLATIONS ("namespace chroot"), BENCH_WORK (bench/work); ROOTFS_* for mkrootfs.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-5}
BUILDAH_WARMUP=${BUILDAH_WARMUP:-1}
# The commit the measured binary was built from, when it is not the checkout's HEAD.
BENCH_GIT_REV=${IMGBUILD_REV:-$BENCH_GIT_REV}
read -r -a ISOS <<<"${ISOLATIONS:-namespace chroot}"

OUT=$WORK/sandbox
mkdir -p "$WORK" "$OUT"
rm -rf --one-file-system "${OUT:?}"/*.json "$OUT"/*.stderr "$OUT"/*.stdout "$OUT"/*.yaml "$OUT"/ctx
ROOTFS=$WORK/debian-rootfs.tar
ROOTFS_OK=1
if ! "$BENCH_DIR/mkrootfs.sh" "$ROOTFS"; then
    warn "no root filesystem; every row is n/a"
    ROOTFS_OK=0
fi

if [[ ${SKIP_IMGBUILD:-0} == 1 || $ROOTFS_OK == 0 ]]; then
    [[ ${SKIP_IMGBUILD:-0} == 1 ]] && warn "imgbuild: skipped (SKIP_IMGBUILD=1)"
    IMGBUILD_OK=0
else
    ensure_imgbuild
fi
ensure_buildah
if [[ $ROOTFS_OK == 0 ]]; then BUILDAH_OK=0; fi

# A fresh word for every step, so that the run layer is never a cache hit.
fresh() { printf 'b%s' "$(date +%s%N)"; }
export ROOTFS

# write_yaml FILE STEP...: the image graph, `step` running the given commands.
# JSON strings are YAML flow scalars; the tarball path is relative to $WORK.
write_yaml() {
    local file=$1
    shift
    python3 - "$file" "$ROOTFS" "$@" <<'EOF'
import json, os, sys
file, rootfs, steps = sys.argv[1], sys.argv[2], sys.argv[3:]
rel = os.path.relpath(rootfs, os.path.dirname(os.path.abspath(file)))
with open(file, "w") as f:
    f.write("# Written by bench/sandbox.sh.\nimages:\n"
            f"  base:\n    from: {{rootfs: {json.dumps(rel)}}}\n"
            f"  step:\n    from: base\n    run: {json.dumps(steps)}\n")
EOF
}
# measure.py's --prepare runs in `bash -c`: it gets these two from the environment.
export -f write_yaml fresh

# The yaml lives next to the tarball (bench/work); one per isolation.
yaml_of() { printf '%s/images-sandbox-%s.yaml' "$WORK" "$1"; }
home_of() { printf '%s/home-%s' "$OUT" "$1"; }
# the timed command: stdout (JSON) and stderr (progress) to files of this run
img_cmd() { # ISOLATION IMAGE TAG
    printf 'IMGBUILD_HOME=%s IMGBUILD_REVISION= %s -f %s --json build %s --isolation %s >%s 2>%s' \
        "$(q "$(home_of "$1")")" "$(q "$IMGBUILD")" "$(q "$(yaml_of "$1")")" "$2" "$1" \
        "$(q "$OUT/$3.stdout")" "$(q "$OUT/$3.stderr")"
}
# A measured imgbuild run is not counted if it printed no JSON whose `step` layer
# was built now with phases; its stderr tail goes into the result.
check_img_run() { # RESULT_JSON TAG
    python3 - "$1" "$OUT/$2.stdout" "$OUT/$2.stderr" <<'EOF'
import json, sys
res_path, out_path, err_path = sys.argv[1:]
try:
    res = json.load(open(res_path))
except (OSError, ValueError):
    sys.exit(0)
why = None
try:
    doc = json.load(open(out_path))
    imgs = {i["name"]: i for i in doc.get("images", [])}
    if "step" in imgs and not any(l.get("built") and l.get("phases") for l in imgs["step"]["layers"]):
        why = "the step's run layer was not built by this run (no phases)"
except (OSError, ValueError, KeyError, TypeError) as e:
    why = f"no build JSON on stdout ({e})"
if not res.get("ok"):
    try:
        res["stderr_tail"] = open(err_path, errors="replace").read()[-2000:]
    except OSError:
        pass
    print(f"  stderr: {res.get('stderr_tail', '')[-600:]}", file=sys.stderr)
elif why:
    res.update(ok=False, error=why)
    print(f"warning: {res['name']}: not counted: {why}", file=sys.stderr)
json.dump(res, open(res_path, "w"), indent=2)
EOF
}

HOSTNAME_ORIG=
if [[ $ROOTFS_OK == 1 ]]; then
    HOSTNAME_ORIG=$(tar -xOf "$ROOTFS" ./etc/hostname 2>/dev/null | head -n 1 || true)
fi

if [[ $IMGBUILD_OK == 1 ]]; then
    for iso in "${ISOS[@]}"; do
        home=$(home_of "$iso")
        reset_dir "$home"
        log "imgbuild $iso: import the tarball (build base, fresh IMGBUILD_HOME)"
        write_yaml "$(yaml_of "$iso")" "touch /etc/bench-$(fresh)"
        measure --name "imgbuild-$iso-import" --out "$OUT/imgbuild-$iso-import.json" --runs 1 -- \
            "$(img_cmd "$iso" base "imgbuild-$iso-import")"
        log "imgbuild $iso: first build of step (unpacks the cached parent, runs the step)"
        measure --name "imgbuild-$iso-first" --out "$OUT/imgbuild-$iso-first.json" --runs 1 -- \
            "$(img_cmd "$iso" step "imgbuild-$iso-first")"
        check_img_run "$OUT/imgbuild-$iso-first.json" "imgbuild-$iso-first"
        grep -h 'running steps with' "$OUT/imgbuild-$iso-first.stderr" >&2 || true
    done
fi

# buildah: the tarball as a base image once (`FROM scratch` + `ADD`, what Debian's
# own images do), then every run a `FROM` it + `RUN touch`, no layer cache.
store=$OUT/buildah-store
bah=$(bah_cmd "$store")
ctx=$OUT/ctx
if [[ $BUILDAH_OK == 1 ]]; then
    mkdir -p "$ctx"
    ln -f "$ROOTFS" "$ctx/debian-rootfs.tar" 2>/dev/null || cp -f "$ROOTFS" "$ctx/debian-rootfs.tar"
    printf 'FROM scratch\nADD debian-rootfs.tar /\nCMD ["bash"]\n' >"$ctx/Containerfile.base"
    log "buildah: import the tarball (bud FROM scratch + ADD, fresh storage)"
    measure --name buildah-import --out "$OUT/buildah-import.json" --runs 1 \
        --prepare "rm -rf --one-file-system $(q "$store") && sync" -- \
        "$bah bud --isolation chroot --layers=false --pull=never --format oci -q -f $(q "$ctx/Containerfile.base") -t bench-debian $(q "$ctx")"
    if ! python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$OUT/buildah-import.json"; then
        warn "buildah: the base import failed; its step rows are n/a"
        BUILDAH_OK=0
    fi
fi
# write_containerfile: a fresh RUN every time; the previous result is removed first
bah_prepare="$bah rmi -f bench-step >/dev/null 2>&1; printf 'FROM localhost/bench-debian\nRUN touch /etc/bench-%s\n' \$(date +%s%N) >$(q "$ctx/Containerfile.step"); sync"
bah_step="$bah bud --isolation chroot --layers=false --pull=never --format oci -q -f $(q "$ctx/Containerfile.step") -t bench-step $(q "$ctx")"

# Rounds interleave the tools (imgbuild namespace, imgbuild chroot, buildah, ...),
# so that load from anything else on the machine falls on all of them alike.
for ((r = 1; r <= RUNS; r++)); do
    log "round $r/$RUNS"
    if [[ $IMGBUILD_OK == 1 ]]; then
        for iso in "${ISOS[@]}"; do
            tag="imgbuild-$iso-step.$r"
            measure --name "imgbuild-$iso-step" --out "$OUT/imgbuild-$iso-step.json" --append --runs 1 \
                --prepare "write_yaml $(q "$(yaml_of "$iso")") \"touch /etc/bench-\$(fresh)\"" -- \
                "$(img_cmd "$iso" step "$tag")"
            check_img_run "$OUT/imgbuild-$iso-step.json" "$tag"
        done
    fi
    if [[ $BUILDAH_OK == 1 ]]; then
        warmup=0
        if ((r == 1)); then warmup=$BUILDAH_WARMUP; fi
        measure --name buildah-step --out "$OUT/buildah-step.json" --append --runs 1 --warmup "$warmup" \
            --prepare "$bah_prepare" -- "$bah_step"
    fi
done
if [[ $BUILDAH_OK == 1 ]]; then
    # the store holds a few copies of the root filesystem: ~1.5 GB with vfs
    reset_dir "$store"
fi

# A step cannot change the cached parent: one step deletes /usr/share/doc and
# overwrites /etc/hostname, the next build (another step over the same parent)
# must still see both as the tarball has them. A change fails the run (after the
# report is written): the figure prints FAILED and sandbox.sh exits non-zero.
printf '{' >"$OUT/integrity.json"
sep=
if [[ $IMGBUILD_OK == 1 ]]; then
    log "cached parent: a destructive step, then a step that checks the parent is intact"
    destroy="rm -rf /usr/share/doc && echo x > /etc/hostname"
    check_doc="test -d /usr/share/doc/apt || { echo '/usr/share/doc/apt is gone'; exit 1; }"
    check_host="test \"\$(cat /etc/hostname 2>/dev/null)\" = '$HOSTNAME_ORIG' || { echo \"/etc/hostname is now: \$(cat /etc/hostname)\"; exit 1; }"
    for iso in "${ISOS[@]}"; do
        y=$(yaml_of "$iso") home=$(home_of "$iso")
        detail=
        write_yaml "$y" "$destroy # $(fresh)"
        if bash -c "$(img_cmd "$iso" step "integrity-$iso-destroy")"; then
            write_yaml "$y" "$check_doc # $(fresh)" "$check_host"
            if bash -c "$(img_cmd "$iso" step "integrity-$iso-check")"; then
                result=pass
            else
                result=fail
                detail=$(grep -E 'gone|is now|FAILED' "$OUT/integrity-$iso-check.stderr" | head -n 3 | tr '\n' ' ')
            fi
        else
            result=n/a
            detail="the destructive step failed: $(tail -n 2 "$OUT/integrity-$iso-destroy.stderr" | tr '\n' ' ')"
        fi
        # and the store's cached tree itself, looked at from outside
        cached=$(find "$home/rootfs" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | head -n 1)
        intact=null
        if [[ -n $cached ]]; then
            if [[ -d $cached/usr/share/doc/apt && $(cat "$cached/etc/hostname" 2>/dev/null) == "$HOSTNAME_ORIG" ]]; then
                intact=true
            else
                intact=false
            fi
        fi
        log "cached parent, $iso: $result${detail:+ ($detail)}; store's cached tree intact: $intact"
        printf '%s"%s": {"result": "%s", "cached_tree_intact": %s, "detail": %s}' "$sep" "$iso" "$result" "$intact" \
            "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$detail")" >>"$OUT/integrity.json"
        sep=", "
    done
fi
printf '}\n' >>"$OUT/integrity.json"

# Can the store's filesystem reflink? Then a copy (chroot) is meant to be fast too.
reflink=false
if [[ $IMGBUILD_OK == 1 ]]; then
    head -c 65536 /dev/zero >"$OUT/reflink.a"
    if cp --reflink=always "$OUT/reflink.a" "$OUT/reflink.b" 2>/dev/null; then reflink=true; fi
    rm -f "$OUT/reflink.a" "$OUT/reflink.b"
fi
fstype=$(findmnt -n -o FSTYPE -T "$OUT" 2>/dev/null || stat -f -c %T "$OUT" 2>/dev/null || echo unknown)

BENCH_DIR="$BENCH_DIR" python3 - "$WORK" "$(versions_json)" "$RUNS" "$reflink" "$fstype" "${ISOS[*]}" <<'EOF'
import datetime, json, os, statistics, sys
work, versions, runs, reflink, fstype, isos = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "true", sys.argv[5], sys.argv[6].split()
d = os.path.join(work, "sandbox")

sys.path.insert(0, os.environ["BENCH_DIR"])
from results import load, med, ok, results, rss_mib  # noqa: E402

r = results(d)
stats = load(os.path.join(work, "debian-rootfs.stats.json")) or {}
integ = load(os.path.join(d, "integrity.json")) or {}

def phases_of(tag_prefix, n):
    """The step layer's phases from each run's JSON, in run order."""
    out = []
    for i in range(1, n + 1):
        doc = load(os.path.join(d, f"{tag_prefix}.{i}.stdout"))
        try:
            img = {m["name"]: m for m in doc["images"]}["step"]
            ph = next(l["phases"] for l in img["layers"] if l.get("built") and l.get("phases"))
        except (TypeError, KeyError, StopIteration):
            continue
        out.append(ph)
    return out

def first_phases(tag):
    doc = load(os.path.join(d, f"{tag}.stdout"))
    try:
        img = {m["name"]: m for m in doc["images"]}["step"]
        return next(l["phases"] for l in img["layers"] if l.get("built") and l.get("phases"))
    except (TypeError, KeyError, StopIteration):
        return None

def isoline(tag):
    try:
        for line in open(os.path.join(d, f"{tag}.stderr")):
            if "running steps with" in line:
                return line.split("running steps with", 1)[1].strip()
    except OSError:
        pass
    return None

def t(v):
    if v is None:
        return "n/a"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"

def cell(x):
    if not x:
        return "n/a"
    if not x.get("ok"):
        return "failed: " + x.get("error", "?")
    if not x.get("runs"):
        return "n/a"
    w = [y["wall_s"] for y in x["runs"]]
    if len(w) == 1:
        return t(w[0])
    return f"{t(statistics.median(w))} ({t(min(w))}..{t(max(w))})"

rows, phase = [], {}
for iso in isos:
    step = r.get(f"imgbuild-{iso}-step")
    ph = phases_of(f"imgbuild-{iso}-step", runs) if ok(step) else []
    phase[iso] = {k: statistics.median(p[k] for p in ph) for k in ("prepare", "steps", "snapshot", "write")} if ph else None
    phase[iso + "-runs"] = ph
    phase[iso + "-first"] = first_phases(f"imgbuild-{iso}-first")
    phase[iso + "-how"] = isoline(f"imgbuild-{iso}-first")
    rows.append((f"imgbuild {iso}: step build", step, phase[iso]))
rows.append(("buildah bud FROM base + RUN (chroot, vfs)", r.get("buildah-step"), None))
for iso in isos:
    rows.append((f"imgbuild {iso}: first build of step", r.get(f"imgbuild-{iso}-first"), phase[iso + "-first"]))
for iso in isos:
    rows.append((f"imgbuild {iso}: import (build base)", r.get(f"imgbuild-{iso}-import"), None))
rows.append(("buildah bud FROM scratch + ADD tarball", r.get("buildah-import"), None))

now = os.environ.get("BENCH_STARTED") or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print()
print(f"imgbuild sandbox benchmark, started {now}; {versions.get('nproc')} cores, {versions.get('mem_gib')} GiB, "
      f"kernel {versions.get('kernel')}; {versions.get('imgbuild') or 'no imgbuild'} at {versions.get('git_rev') or '?'}; "
      f"{versions.get('buildah') or 'no buildah'}")
if stats:
    print(f"root filesystem: Debian {stats.get('suite')} (mmdebstrap, {len(stats.get('include', []))} packages named), "
          f"{stats['files']:,} files + {stats['symlinks']:,} symlinks + {stats.get('hardlinks', 0)} hard links in "
          f"{stats['dirs']:,} dirs, {stats['bytes'] / 2**20:.1f} MiB in files; tarball {stats['tar_bytes'] / 2**20:.1f} MiB")
print(f"store filesystem: {fstype}, reflinks: {'yes' if reflink else 'no'}")
for iso in isos:
    if phase.get(iso + "-how"):
        print(f"imgbuild --isolation {iso}: running steps with {phase[iso + '-how']}")
loads = [x["mean_load1"] for x in r.values() if x.get("ok") and "mean_load1" in x]
if loads and max(loads) > 1.25 * (versions.get("nproc") or 1):
    print(f"note: the machine was busy (1-min load {min(loads):.1f}..{max(loads):.1f} during runs)")
print()
w = max(len(x[0]) for x in rows) + 2
hdr = f"{'tool':<{w}}{'wall: median (min..max)':<28}{'runs':>4}  {'peak RSS':>8}  {'prepare':>8}  {'steps':>8}  {'snapshot':>8}  {'write':>8}"
print(hdr)
for label, x, ph in rows:
    n = len(x["runs"]) if x and x.get("runs") else ""
    peak = rss_mib(x)
    rss = "" if not ok(x) else ("n/a" if peak is None else f"{peak:.0f} MiB")
    phs = "".join(f"  {t(ph[k]) if ph else '':>8}" for k in ("prepare", "steps", "snapshot", "write"))
    print(f"{label:<{w}}{cell(x):<28}{n!s:>4}  {rss:>8}" + phs)
print("(phases: medians over the timed runs, from the step layer's `phases` in --json output)")
print()

bah = med(r.get("buildah-step"))
figures = []  # label, value, op, target, unit
for iso in isos:
    img = med(r.get(f"imgbuild-{iso}-step"))
    figures.append((f"buildah RUN / imgbuild {iso} step", bah / img if bah and img else None, ">=", 3.0, "x"))
for iso in isos:
    ph = phase.get(iso)
    # the materialising target holds where there is an overlay or reflinks
    fast = iso != "chroot" or reflink
    figures.append((f"imgbuild {iso} prepare (materialise parent)", ph and ph["prepare"], "<=" if fast else None, 0.5, "s"))
    figures.append((f"imgbuild {iso} snapshot", ph and ph["snapshot"], "<=", 1.0, "s"))
for iso in isos:
    x = r.get(f"imgbuild-{iso}-step")
    figures.append((f"imgbuild {iso} peak RSS, step build", rss_mib(x), None, None, "MiB"))
w = max(len(f[0]) for f in figures) + 2
print(f"{'figure':<{w}}{'value':>10}  {'target':<9}")
out_figs = []
for label, val, op, target, unit in figures:
    if val is None:
        vs, met = "n/a", None
    else:
        vs = f"{val:.3f} s" if unit == "s" else f"{val:.1f} {unit}"
        met = None if op is None else (val <= target if op == "<=" else val >= target)
    ts = f"{op} {target:g}" if op else "(info)"
    print(f"{label:<{w}}{vs:>10}  {ts:<9}{'' if met is None else ('met' if met else 'MISSED')}")
    out_figs.append({"figure": label, "value": val, "unit": unit, "op": op, "target": target, "met": met})
changed = []  # isolations whose step changed the cached parent: the run fails
for iso in isos:
    v = integ.get(iso)
    if v is None:
        print(f"{'cached parent unchanged by a step, ' + iso:<{w}}{'n/a':>10}")
        continue
    notes = [v["detail"]] if v.get("detail") else []
    if v.get("cached_tree_intact") is not None:
        notes.append("the store's cached tree, seen from outside: " + ("intact" if v["cached_tree_intact"] else "CHANGED"))
    result = v["result"]
    if result == "fail" or v.get("cached_tree_intact") is False:
        result = "FAILED"
        changed.append(iso)
    print(f"{'cached parent unchanged by a step, ' + iso:<{w}}{result:>10}  {'; '.join(notes)}")
if not reflink:
    print("(chroot copies the parent in full: no reflinks here, so the 0.5 s target does not apply to it)")
print()
report = {"benchmark": "sandbox", "date": now, "machine": versions, "rootfs": stats,
          "store_fs": fstype, "reflink": reflink, "results": r, "phases": phase,
          "integrity": integ, "figures": out_figs}
path = os.path.join(work, "sandbox.json")
with open(path, "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
print(f"written: {path}")
if changed:
    sys.exit(f"FAILED: a step changed the cached parent with {', '.join(changed)} isolation")
EOF
