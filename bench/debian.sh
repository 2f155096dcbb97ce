#!/usr/bin/env bash
# debian.sh: Debian images from the real archive. imgbuild builds `php` (a trixie minbase
# `base` with systemd, exim4, tzdata, ca-certificates, then apache2 + PHP 8.4 over it)
# and mmdebstrap makes a root filesystem of the same packages, in the same run, round
# by round: both cold (empty caches), both with the .debs cached, plus imgbuild's
# no-change rebuild (with an unchanged images.lock when `imgbuild lock` exists). Then
# the two results are compared: installed package versions and the file lists.
# A report, not a test: a tool that fails or is missing shows as n/a or failed.
#
# Environment: RUNS (3) rounds, NOCHANGE_RUNS (3) no-change rebuilds per round,
# DEBIAN_SUITE (trixie), DEBIAN_MIRROR (http://deb.debian.org/debian), BASE_PACKAGES,
# PHP_PACKAGES (space-separated), MM_SOURCES (suites: the suite, -updates and -security,
# as imgbuild reads them; plain: the mirror URL alone), IMGBUILD, IMGBUILD_REV,
# IMGBUILD_NO_BUILD=1, SKIP_IMGBUILD=1, SKIP_MMDEBSTRAP=1, MM_WARM=0 (no mmdebstrap run
# with a warm apt cache), BENCH_WORK (bench/work). Needs mmdebstrap, root, and a route
# to the mirror.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-3}
NOCHANGE_RUNS=${NOCHANGE_RUNS:-3}
SUITE=${DEBIAN_SUITE:-trixie}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
read -r -a BASE_PKGS <<<"${BASE_PACKAGES:-systemd systemd-sysv exim4-daemon-light tzdata ca-certificates}"
read -r -a PHP_PKGS <<<"${PHP_PACKAGES:-apache2 libapache2-mod-php8.4 php8.4-cli php8.4-intl php8.4-xml php8.4-mbstring php8.4-zip php8.4-gd php8.4-curl php8.4-soap php8.4-pgsql php8.4-opcache}"
MM_SOURCES=${MM_SOURCES:-suites}
MM_WARM=${MM_WARM:-1}
# The commit the measured binary was built from, when it is not the checkout's HEAD.
BENCH_GIT_REV=${IMGBUILD_REV:-$BENCH_GIT_REV}

OUT=$WORK/debian
APT_CACHE=$OUT/apt-cache  # mmdebstrap's .debs for its warm runs; kept between runs of the script
mkdir -p "$OUT" "$APT_CACHE"
for d in "$OUT"/*; do
    [[ $d == "$APT_CACHE" ]] || rm -rf --one-file-system "$d"
done
sync
YAML=$OUT/images.yaml
LOCKFILE=$OUT/images.lock
HOME_COLD=$OUT/home-cold
HOME_WARM=$OUT/home-warm

if [[ ${SKIP_IMGBUILD:-0} == 1 ]]; then
    warn "imgbuild: skipped (SKIP_IMGBUILD=1)"
    IMGBUILD_OK=0
else
    ensure_imgbuild
fi
MM_OK=0
if [[ ${SKIP_MMDEBSTRAP:-0} == 1 ]]; then
    warn "mmdebstrap: skipped (SKIP_MMDEBSTRAP=1)"
elif ! command -v mmdebstrap >/dev/null; then
    warn "mmdebstrap: not installed; its rows are n/a (apt-get install mmdebstrap)"
elif [[ $(id -u) != 0 ]]; then
    warn "mmdebstrap: --mode=root needs root; its rows are n/a"
else
    MM_OK=1
fi
LOCK_OK=0
if [[ $IMGBUILD_OK == 1 ]] && "$IMGBUILD" lock --help >/dev/null 2>&1; then
    LOCK_OK=1
fi

# The image graph: JSON strings are YAML flow scalars.
python3 - "$YAML" "$SUITE" "$MIRROR" "${#BASE_PKGS[@]}" "${BASE_PKGS[@]}" "${PHP_PKGS[@]}" <<'EOF'
import json, sys
path, suite, mirror, nbase, *pkgs = sys.argv[1:]
base, php = pkgs[:int(nbase)], pkgs[int(nbase):]
with open(path, "w") as f:
    f.write("# Written by bench/debian.sh.\nimages:\n"
            f"  base:\n    from: scratch\n    debian:\n      suite: {json.dumps(suite)}\n"
            f"      variant: minbase\n      mirror: {json.dumps(mirror)}\n"
            f"      packages: {json.dumps(base)}\n"
            f"  php:\n    from: base\n    debian:\n      packages: {json.dumps(php)}\n")
EOF

# mmdebstrap: the same package set, the same sources as imgbuild reads for a
# /debian mirror (the suite, its -updates, and -security from the sibling archive).
INCLUDE=$(IFS=,; printf '%s' "${BASE_PKGS[*]},${PHP_PKGS[*]}")
MM_SRC=()
if [[ $MM_SOURCES == plain ]]; then
    MM_SRC=("$MIRROR")
else
    MM_SRC=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main")
    if [[ $MIRROR == */debian ]]; then MM_SRC+=("deb ${MIRROR}-security $SUITE-security main"); fi
fi
mm_src=""
for s in "${MM_SRC[@]}"; do mm_src+=" $(q "$s")"; done
mm_base="mmdebstrap --mode=root --variant=minbase --include=$(q "$INCLUDE")"
# the warm runs: the cached .debs hard-linked (else copied) into the new root's apt
# cache before apt runs; mmdebstrap 1.3 has no option to point apt at an outside cache.
hook="mkdir -p \"\$1\"/var/cache/apt/archives && { cp -al $(q "$APT_CACHE")/*.deb \"\$1\"/var/cache/apt/archives/ 2>/dev/null || cp -a $(q "$APT_CACHE")/*.deb \"\$1\"/var/cache/apt/archives/; }"
mm_cold_cmd="$mm_base $(q "$SUITE") $(q "$OUT/mm-cold.tar")$mm_src"
mm_warm_cmd="$mm_base --setup-hook=$(q "$hook") $(q "$SUITE") $(q "$OUT/mm-warm.tar")$mm_src"

# the timed imgbuild command: stdout (JSON) and stderr to files of this run
img_cmd() { # HOME TAG
    printf 'IMGBUILD_HOME=%s IMGBUILD_REVISION= %s -f %s --json -q build php >%s 2>%s' \
        "$(q "$1")" "$(q "$IMGBUILD")" "$(q "$YAML")" "$(q "$OUT/$2.stdout")" "$(q "$OUT/$2.stderr")"
}
# check_img RESULT_JSON TAG built|cached: a run is not counted when its JSON does not
# show every layer of base and php built by it (built) or every layer reused (cached).
check_img() {
    python3 - "$1" "$OUT/$2.stdout" "$OUT/$2.stderr" "$3" <<'EOF'
import json, sys
res_path, out_path, err_path, want = sys.argv[1:]
try:
    res = json.load(open(res_path))
except (OSError, ValueError):
    sys.exit(0)
why = None
try:
    doc = json.load(open(out_path))
    imgs = {i["name"]: i for i in doc.get("images", [])}
    layers = [l for n in ("base", "php") for l in imgs[n]["layers"]]
    if not layers:
        why = "no layers in the build JSON"
    elif want == "built" and not all(l.get("built") for l in layers):
        why = "not every Debian layer was built by this run"
    elif want == "cached" and any(l.get("built") for l in layers):
        why = "a layer was rebuilt: not a cache hit"
except (OSError, ValueError, KeyError, TypeError) as e:
    why = f"no build JSON on stdout ({e!r})"
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

# mmdebstrap's apt cache for its warm runs: one untimed run that keeps what apt
# downloaded (topping up what an earlier run of this script left).
MM_WARM_OK=0
if [[ $MM_OK == 1 && $MM_WARM == 1 ]]; then
    log "mmdebstrap: filling its apt cache for the warm runs (not timed; $APT_CACHE)"
    prime="$mm_base --quiet --skip=essential/unlink --setup-hook='mkdir -p \"\$1\"/var/cache/apt/archives/' --setup-hook=$(q "sync-in $APT_CACHE /var/cache/apt/archives/") --customize-hook=$(q "sync-out /var/cache/apt/archives $APT_CACHE") $(q "$SUITE") /dev/null$mm_src"
    measure --name mmdebstrap-prime --out "$OUT/mmdebstrap-prime.json" --runs 1 -- "$prime"
    if compgen -G "$APT_CACHE/*.deb" >/dev/null; then
        MM_WARM_OK=1
        log "mmdebstrap: $(find "$APT_CACHE" -name '*.deb' | wc -l) .debs, $(du -sm "$APT_CACHE" | cut -f1) MiB in its cache"
    else
        warn "mmdebstrap: no .debs in $APT_CACHE; the warm row is n/a"
    fi
fi

# Rounds interleave the tools, so that load from anything else on the machine (and the
# mirror's mood) falls on all of them alike.
for ((r = 1; r <= RUNS; r++)); do
    log "round $r/$RUNS"
    if [[ $IMGBUILD_OK == 1 ]]; then
        log "imgbuild build php, cold (fresh IMGBUILD_HOME, no images.lock)"
        measure --name imgbuild-cold --out "$OUT/imgbuild-cold.json" --append --runs 1 \
            --prepare "rm -rf --one-file-system $(q "$HOME_COLD") $(q "$HOME_WARM") $(q "$LOCKFILE"); sync" -- \
            "$(img_cmd "$HOME_COLD" "imgbuild-cold.$r")"
        check_img "$OUT/imgbuild-cold.json" "imgbuild-cold.$r" built
    fi
    if [[ $MM_OK == 1 ]]; then
        log "mmdebstrap, cold"
        measure --name mmdebstrap-cold --out "$OUT/mmdebstrap-cold.json" --append --runs 1 \
            --prepare "rm -f $(q "$OUT/mm-cold.tar"); sync" -- "$mm_cold_cmd"
    fi
    if [[ $IMGBUILD_OK == 1 ]]; then
        if [[ -d $HOME_COLD/debian/debs ]]; then
            log "imgbuild build php, .debs cached (a new IMGBUILD_HOME holding only the cold run's debian/)"
            measure --name imgbuild-debs-cached --out "$OUT/imgbuild-debs-cached.json" --append --runs 1 \
                --prepare "rm -rf --one-file-system $(q "$HOME_WARM") && mkdir -p $(q "$HOME_WARM") && mv $(q "$HOME_COLD/debian") $(q "$HOME_WARM/") && rm -rf --one-file-system $(q "$HOME_COLD") && sync" -- \
                "$(img_cmd "$HOME_WARM" "imgbuild-debs-cached.$r")"
            check_img "$OUT/imgbuild-debs-cached.json" "imgbuild-debs-cached.$r" built
        else
            warn "imgbuild: the cold run left no $HOME_COLD/debian/debs; no cached-.debs run this round"
        fi
    fi
    if [[ $MM_WARM_OK == 1 ]]; then
        log "mmdebstrap, warm apt cache"
        measure --name mmdebstrap-warm --out "$OUT/mmdebstrap-warm.json" --append --runs 1 \
            --prepare "rm -f $(q "$OUT/mm-warm.tar"); sync" -- "$mm_warm_cmd"
    fi
    if [[ $IMGBUILD_OK == 1 && -d $HOME_WARM/refs ]]; then
        log "imgbuild build php again, nothing changed (no images.lock)"
        measure --name imgbuild-nochange --out "$OUT/imgbuild-nochange.json" --append --runs "$NOCHANGE_RUNS" -- \
            "$(img_cmd "$HOME_WARM" "imgbuild-nochange.$r")"
        check_img "$OUT/imgbuild-nochange.json" "imgbuild-nochange.$r" cached
    fi
done

if [[ $IMGBUILD_OK == 1 && -d $HOME_WARM/refs ]]; then
    if [[ $LOCK_OK == 1 ]]; then
        log "imgbuild lock (not timed), then rebuilds with the unchanged lock"
        if IMGBUILD_HOME=$HOME_WARM "$IMGBUILD" -f "$YAML" -q lock >"$OUT/lock.stdout" 2>"$OUT/lock.stderr" && [[ -f $LOCKFILE ]]; then
            measure --name imgbuild-nochange-locked --out "$OUT/imgbuild-nochange-locked.json" \
                --runs "$((NOCHANGE_RUNS * RUNS))" -- "$(img_cmd "$HOME_WARM" imgbuild-nochange-locked)"
            check_img "$OUT/imgbuild-nochange-locked.json" imgbuild-nochange-locked cached
        else
            warn "imgbuild lock failed: $(tail -n 2 "$OUT/lock.stderr" | tr '\n' ' ')"
        fi
    else
        warn "imgbuild: no 'lock' command at this commit; the no-change rebuild is measured without a lock only"
    fi
fi

# The two results compared (not timed): imgbuild's php (the last cached-.debs build)
# and mmdebstrap's last cold tarball.
if [[ $IMGBUILD_OK == 1 && -d $HOME_WARM/refs ]]; then
    log "comparing: package versions and file lists"
    IMGBUILD_HOME=$HOME_WARM "$IMGBUILD" -f "$YAML" --json -q inspect php >"$OUT/inspect.json" 2>"$OUT/inspect.stderr" || true
    # shellcheck disable=SC2016  # dpkg-query's format, not the shell's
    IMGBUILD_HOME=$HOME_WARM "$IMGBUILD" -f "$YAML" -q run php -- \
        dpkg-query -W -f '${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n' \
        >"$OUT/imgbuild.pkgs" 2>"$OUT/imgbuild.pkgs.stderr" || warn "imgbuild run php -- dpkg-query failed; reading the layers' dpkg status instead"
fi
mm_tar=
for t in "$OUT/mm-cold.tar" "$OUT/mm-warm.tar"; do
    if [[ -s $t ]]; then mm_tar=$t; break; fi
done
python3 - "$OUT" "$HOME_WARM" "$mm_tar" <<'EOF'
"""compare.json: installed packages and file lists of imgbuild's php and mmdebstrap's tarball."""
import collections, json, os, sys, tarfile
out, home, mm_tar = sys.argv[1:]

def norm(name):
    return name.lstrip(".").strip("/") if name not in (".", "./") else ""

def meta(m):
    return {"type": m.type.decode(), "mode": m.mode, "uid": m.uid, "gid": m.gid,
            "size": m.size if m.isreg() else 0,
            "link": m.linkname if m.issym() else norm(m.linkname) if m.islnk() else ""}

def parse_status(text):
    pk = {}
    for para in text.split("\n\n"):
        f = {}
        for line in para.splitlines():
            if line and not line[0].isspace() and ":" in line:
                k, v = line.split(":", 1)
                f[k] = v.strip()
        if "Package" in f and f.get("Status", "").endswith(" installed"):
            pk[f"{f['Package']}:{f.get('Architecture', '')}"] = f.get("Version", "")
    return pk

res = {"imgbuild": None, "mmdebstrap": None}
img_files, img_status = None, None
try:
    doc = json.load(open(os.path.join(out, "inspect.json")))
    img_files = {}
    for layer in doc["layers"]:
        blob = os.path.join(home, "blobs/sha256", layer["digest"].split(":", 1)[1])
        with tarfile.open(blob, "r:*") as t:
            for m in t:
                p = norm(m.name)
                d, b = os.path.split(p)
                if b == ".wh..wh..opq":
                    for k in [k for k in img_files if k.startswith(d + "/")]:
                        del img_files[k]
                    continue
                if b.startswith(".wh."):
                    gone = os.path.join(d, b[4:])
                    for k in [k for k in img_files if k == gone or k.startswith(gone + "/")]:
                        del img_files[k]
                    continue
                img_files[p] = meta(m)
                if p == "var/lib/dpkg/status" and m.isreg():
                    img_status = t.extractfile(m).read().decode(errors="replace")
    img_files.pop("", None)
except (OSError, ValueError, KeyError, tarfile.TarError) as e:
    res["imgbuild_error"] = f"reading the image's layers: {e!r}"
    img_files = None

img_pkgs, how = None, None
try:
    rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(out, "imgbuild.pkgs")) if line.strip()]
    img_pkgs = {f"{n}:{a}": v for st, n, v, a in rows if st.startswith("ii")}
    how = "imgbuild run php -- dpkg-query -W"
except (OSError, ValueError):
    pass
if not img_pkgs and img_status:
    img_pkgs, how = parse_status(img_status), "var/lib/dpkg/status in the image's layers"

mm_files, mm_pkgs = None, None
if mm_tar:
    try:
        mm_files = {}
        with tarfile.open(mm_tar) as t:
            for m in t:
                p = norm(m.name)
                mm_files[p] = meta(m)
                if p == "var/lib/dpkg/status" and m.isreg():
                    mm_pkgs = parse_status(t.extractfile(m).read().decode(errors="replace"))
        mm_files.pop("", None)
    except (OSError, tarfile.TarError) as e:
        res["mmdebstrap_error"] = f"reading {mm_tar}: {e!r}"
        mm_files = None

res["packages_how"] = how
res["mm_tar"] = os.path.basename(mm_tar) if mm_tar else None
if img_pkgs is not None and mm_pkgs is not None:
    both = sorted(set(img_pkgs) & set(mm_pkgs))
    res["packages"] = {
        "imgbuild": len(img_pkgs), "mmdebstrap": len(mm_pkgs),
        "only_imgbuild": {k: img_pkgs[k] for k in sorted(set(img_pkgs) - set(mm_pkgs))},
        "only_mmdebstrap": {k: mm_pkgs[k] for k in sorted(set(mm_pkgs) - set(img_pkgs))},
        "versions_differ": {k: {"imgbuild": img_pkgs[k], "mmdebstrap": mm_pkgs[k]}
                            for k in both if img_pkgs[k] != mm_pkgs[k]},
    }
    p = res["packages"]
    p["identical"] = not (p["only_imgbuild"] or p["only_mmdebstrap"] or p["versions_differ"])
if img_files is not None and mm_files is not None:
    only_i = sorted(set(img_files) - set(mm_files))
    only_m = sorted(set(mm_files) - set(img_files))

    def top(paths):
        # by the directory holding the path, at most two levels deep
        c = collections.Counter("/".join(os.path.dirname(x).split("/")[:2]) for x in paths)
        return c.most_common(20)
    differ = collections.defaultdict(list)
    for x in sorted(set(img_files) & set(mm_files)):
        a, b = img_files[x], mm_files[x]
        for k in ("type", "mode", "uid", "gid", "size", "link"):
            if a[k] != b[k]:
                differ[k].append({"path": x, "imgbuild": a[k], "mmdebstrap": b[k]})
    res["files"] = {
        "imgbuild": len(img_files), "mmdebstrap": len(mm_files),
        "only_imgbuild": only_i, "only_mmdebstrap": only_m,
        "top_only_imgbuild": top(only_i), "top_only_mmdebstrap": top(only_m),
        "in_both": len(set(img_files) & set(mm_files)),
        "differ_in_both": {k: {"count": len(v), "paths": v[:40]} for k, v in differ.items()},
    }
json.dump(res, open(os.path.join(out, "compare.json"), "w"), indent=2)
EOF

# Sizes, for the report: what each tool downloaded and wrote.
python3 - "$OUT" "$HOME_WARM" "$APT_CACHE" <<'EOF'
import json, os, sys
out, home, apt = sys.argv[1:]
def du(d, suffix=""):
    n = b = 0
    for root, _, files in os.walk(d):
        for f in files:
            if f.endswith(suffix):
                n += 1
                b += os.lstat(os.path.join(root, f)).st_size
    return {"files": n, "bytes": b}
sizes = {"imgbuild_debs": du(os.path.join(home, "debian/debs"), ".deb"),
         "imgbuild_indexes": du(os.path.join(home, "debian/indexes")),
         "mmdebstrap_apt_cache": du(apt, ".deb")}
for t in ("mm-cold.tar", "mm-warm.tar"):
    p = os.path.join(out, t)
    if os.path.exists(p):
        sizes[t] = os.path.getsize(p)
json.dump(sizes, open(os.path.join(out, "sizes.json"), "w"), indent=2)
EOF

BENCH_DIR="$BENCH_DIR" python3 - "$WORK" "$(versions_json)" "$RUNS" "$LOCK_OK" "$MM_SOURCES" "$SUITE" "${#BASE_PKGS[@]}" "${#PHP_PKGS[@]}" "$(mmdebstrap --version 2>/dev/null | head -n 1 || true)" <<'EOF'
import datetime, json, os, statistics, sys
work, versions, runs, lock_ok = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
mm_sources, suite, nbase, nphp, mm_version = sys.argv[5], sys.argv[6], int(sys.argv[7]), int(sys.argv[8]), sys.argv[9]
d = os.path.join(work, "debian")

sys.path.insert(0, os.environ["BENCH_DIR"])
from results import load, med, ok, peak_rss, results, rss_mib  # noqa: E402

r = results(d)
cmp = load(os.path.join(d, "compare.json")) or {}
sizes = load(os.path.join(d, "sizes.json")) or {}

def t(v):
    if v is None:
        return "n/a"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"

def cell(x):
    if not x:
        return "n/a"
    if x.get("note"):
        return x["note"]
    if not x.get("ok"):
        return "failed: " + x.get("error", "?")
    if not x.get("runs"):
        return "n/a"
    w = [y["wall_s"] for y in x["runs"]]
    if len(w) == 1:
        return t(w[0])
    return f"{t(statistics.median(w))} ({t(min(w))}..{t(max(w))})"

def builds(prefix):
    """Every run's build JSON of this kind (cold and cached: one per round)."""
    docs = []
    for fn in sorted(os.listdir(d)):
        if fn.startswith(prefix + ".") and fn.endswith(".stdout"):
            doc = load(os.path.join(d, fn))
            if isinstance(doc, dict) and doc.get("images"):
                docs.append(doc)
    return docs

def layer_secs(prefix):
    """Median seconds of base's and php's layers over the runs (built ones)."""
    out = {}
    for doc in builds(prefix):
        for img in doc["images"]:
            s = sum(l.get("seconds", 0) for l in img.get("layers", []))
            out.setdefault(img["name"], []).append(s)
    return {k: statistics.median(v) for k, v in out.items()}

kinds = [("imgbuild build php, cold", "imgbuild-cold"),
         ("mmdebstrap, cold", "mmdebstrap-cold"),
         ("imgbuild build php, .debs cached", "imgbuild-debs-cached"),
         ("mmdebstrap, warm apt cache", "mmdebstrap-warm"),
         ("imgbuild build php, no change, no lock", "imgbuild-nochange"),
         ("imgbuild build php, unchanged lock", "imgbuild-nochange-locked"),
         ("mmdebstrap filling its apt cache (untimed)", "mmdebstrap-prime")]
now = os.environ.get("BENCH_STARTED") or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print()
print(f"imgbuild debian benchmark, started {now}; {versions.get('nproc')} cores, {versions.get('mem_gib')} GiB, "
      f"kernel {versions.get('kernel')}; {versions.get('imgbuild') or 'no imgbuild'} at {versions.get('git_rev') or '?'}; "
      f"{mm_version or 'no mmdebstrap'}")
src = (f"{suite}, {suite}-updates, {suite}-security (main), as imgbuild reads a /debian mirror"
       if mm_sources != "plain" else f"{suite} (main) only, the mirror URL alone")
print(f"images: base = {suite} minbase + {nbase} packages, php = base + {nphp} packages; mmdebstrap: the same "
      f"{nbase + nphp} packages in one minbase root; sources: {src}")
deb = sizes.get("imgbuild_debs")
if deb:
    apt = sizes.get("mmdebstrap_apt_cache") or {}
    print(f"downloaded .debs: imgbuild {deb['files']} ({deb['bytes'] / 2**20:.1f} MiB; indexes "
          f"{sizes.get('imgbuild_indexes', {}).get('bytes', 0) / 2**20:.1f} MiB), mmdebstrap's apt cache {apt.get('files', 0)} "
          f"({apt.get('bytes', 0) / 2**20:.1f} MiB); mmdebstrap tarball {sizes.get('mm-cold.tar', 0) / 2**20:.1f} MiB")
loads = [x["mean_load1"] for x in r.values() if x.get("ok") and "mean_load1" in x]
if loads and max(loads) > 1.25 * (versions.get("nproc") or 1):
    print(f"note: the machine was busy (1-min load {min(loads):.1f}..{max(loads):.1f} during runs)")
print()
rows = []
for label, name in kinds:
    x = r.get(name)
    if name == "imgbuild-nochange-locked" and not lock_ok:
        x = {"ok": True, "runs": [], "note": "n/a: no `imgbuild lock` at this commit"}
    if x is None and name == "mmdebstrap-prime":
        continue
    rows.append((label, name, x, layer_secs(name) if name.startswith("imgbuild") else {}))
w = max(len(x[0]) for x in rows) + 2
print(f"{'tool':<{w}}{'wall: median (min..max)':<28}{'runs':>4}  {'CPU':>8}  {'peak RSS':>8}  {'base':>8}  {'php':>8}")
for label, name, x, ls in rows:
    n = len(x["runs"]) if x and x.get("runs") else ""
    cpus = [y["user_s"] + y["sys_s"] for y in x["runs"]
            if y.get("user_s") is not None and y.get("sys_s") is not None] if ok(x) else []
    cpu = "" if not ok(x) else (f"{statistics.median(cpus):.1f} s" if len(cpus) == len(x["runs"]) else "n/a")
    rss = "" if not ok(x) else ("n/a" if rss_mib(x) is None else f"{rss_mib(x):.0f} MiB")
    print(f"{label:<{w}}{cell(x):<28}{n!s:>4}  {cpu:>8}  {rss:>8}  {t(ls['base']) if 'base' in ls else '':>8}  "
          f"{t(ls['php']) if 'php' in ls else '':>8}")
print("(CPU: user + system of the command and its children, median; base, php: the layers' `seconds` in the build JSON, medians)")
print()

img_cold, mm_cold = med(r.get("imgbuild-cold")), med(r.get("mmdebstrap-cold"))
img_warm, mm_warm = med(r.get("imgbuild-debs-cached")), med(r.get("mmdebstrap-warm"))
nc, ncl = med(r.get("imgbuild-nochange")), med(r.get("imgbuild-nochange-locked"))
# n/a unless every run's peak RSS was measured (a missing one is not small)
rss = peak_rss([x for n, x in r.items() if n.startswith("imgbuild") and ok(x)])
mrss = peak_rss([x for n, x in r.items() if n.startswith("mmdebstrap-") and n != "mmdebstrap-prime" and ok(x)])
ratio = lambda a, b: a / b if a is not None and b else None  # noqa: E731
figures = [
    ("imgbuild cold / mmdebstrap cold", ratio(img_cold, mm_cold), "<=", 1.0, "x"),
    ("imgbuild .debs cached / mmdebstrap cold", ratio(img_warm, mm_cold), "<=", 0.5, "x"),
    ("imgbuild .debs cached / mmdebstrap warm apt cache", ratio(img_warm, mm_warm), None, None, "x"),
    ("mmdebstrap warm / mmdebstrap cold", ratio(mm_warm, mm_cold), None, None, "x"),
    ("imgbuild .debs cached / imgbuild cold", ratio(img_warm, img_cold), None, None, "x"),
    ("imgbuild rebuild, unchanged lock", ncl, "<=", 1.0, "s"),
    ("imgbuild rebuild, no change, no lock" + ("" if lock_ok else " (no lock command)"), nc,
     None if lock_ok else "<=", None if lock_ok else 1.0, "s"),
    ("imgbuild peak RSS (every run)", rss, "<=", 512.0, "MiB"),
    ("mmdebstrap peak RSS", mrss, None, None, "MiB"),
]
w = max(len(f[0]) for f in figures) + 2
print(f"{'figure':<{w}}{'value':>10}  {'target':<9}")
out_figs = []
for label, val, op, target, unit in figures:
    if val is None:
        vs, met = "n/a", None
    else:
        vs = f"{val:.3f} s" if unit == "s" else (f"{val:.2f} x" if unit == "x" else f"{val:.1f} {unit}")
        met = None if op is None else (val <= target if op == "<=" else val >= target)
    ts = f"{op} {target:g}" if op else "(info)"
    print(f"{label:<{w}}{vs:>10}  {ts:<9}{'' if met is None else ('met' if met else 'MISSED')}")
    out_figs.append({"figure": label, "value": val, "unit": unit, "op": op, "target": target, "met": met})

# Same inputs, same image? The php manifest of every imgbuild build in this run.
manifests = {}
for prefix in ("imgbuild-cold", "imgbuild-debs-cached", "imgbuild-nochange", "imgbuild-nochange-locked"):
    for doc in builds(prefix):
        for img in doc["images"]:
            if img["name"] == "php":
                manifests.setdefault(img.get("manifest"), 0)
                manifests[img.get("manifest")] += 1
if manifests:
    n = sum(manifests.values())
    same = "the same in all" if len(manifests) == 1 else f"{len(manifests)} different manifests in"
    print(f"{'php manifest over imgbuild builds':<{w}}{same} {n} builds")
print()
p = cmp.get("packages")
if p:
    if p["identical"]:
        print(f"installed packages: identical ({p['imgbuild']} packages, same versions; imgbuild via {cmp.get('packages_how')})")
    else:
        print(f"installed packages: imgbuild {p['imgbuild']}, mmdebstrap {p['mmdebstrap']}; only in imgbuild: "
              f"{len(p['only_imgbuild'])}, only in mmdebstrap: {len(p['only_mmdebstrap'])}, other version: {len(p['versions_differ'])}")
        for k, v in list(p["only_imgbuild"].items())[:15]:
            print(f"  only imgbuild: {k} {v}")
        for k, v in list(p["only_mmdebstrap"].items())[:15]:
            print(f"  only mmdebstrap: {k} {v}")
        for k, v in list(p["versions_differ"].items())[:15]:
            print(f"  {k}: imgbuild {v['imgbuild']}, mmdebstrap {v['mmdebstrap']}")
else:
    print("installed packages: n/a " + (cmp.get("imgbuild_error") or cmp.get("mmdebstrap_error") or ""))
f = cmp.get("files")
if f:
    print(f"paths: imgbuild {f['imgbuild']:,}, mmdebstrap {f['mmdebstrap']:,} ({cmp.get('mm_tar')}); "
          f"only in imgbuild: {len(f['only_imgbuild'])}, only in mmdebstrap: {len(f['only_mmdebstrap'])}")
    for side in ("imgbuild", "mmdebstrap"):
        tops = f[f"top_only_{side}"]
        if tops:
            print(f"  only in {side}, by directory: " + ", ".join(f"{k or '/'} {n}" for k, n in tops))
    for side in ("imgbuild", "mmdebstrap"):
        paths = f[f"only_{side}"]
        if paths and len(paths) <= 60:
            print(f"  only in {side}: " + " ".join("/" + x for x in paths))
    if f["differ_in_both"]:
        print(f"  in both ({f['in_both']:,}) but different: "
              + ", ".join(f"{k} {v['count']}" for k, v in sorted(f["differ_in_both"].items())))
        for k, v in sorted(f["differ_in_both"].items()):
            for e in v["paths"][:12]:
                a, b = e["imgbuild"], e["mmdebstrap"]
                if k == "mode":
                    a, b = oct(a), oct(b)
                print(f"    {k}: /{e['path']}: imgbuild {a}, mmdebstrap {b}")
else:
    print("paths: n/a " + (cmp.get("imgbuild_error") or cmp.get("mmdebstrap_error") or ""))
print()
report = {"benchmark": "debian", "date": now, "machine": versions, "mmdebstrap": mm_version,
          "mm_sources": mm_sources, "sizes": sizes, "lock_command": lock_ok,
          "results": r, "layer_seconds": {name: layer_secs(name) for _, name in kinds if name.startswith("imgbuild")},
          "php_manifests": manifests, "figures": out_figs, "compare": cmp}
path = os.path.join(work, "debian.json")
with open(path, "w") as fh:
    json.dump(report, fh, indent=2)
    fh.write("\n")
print(f"written: {path}")
EOF
