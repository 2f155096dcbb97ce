#!/usr/bin/env bash
# supply-fleet.sh: what SBOM, provenance and signing add to the agency's own fleet,
# the issue's measure as it words it: a cold `build --all --push` of the repository's
# images.yaml (two Debian bases, PHP and web servers, Moodle 4.5 and 5.1, and CLIENTS
# clients made from clients/acme and clients/initech, half per line), with and without
# `--sbom --provenance --sign-key`, to the real CNCF registry on 127.0.0.1.
#   - Cold: an empty store and an empty registry each round; only the verified
#     Debian packages are copied in first (both arms alike), so Debian's archive's
#     speed is not measured; every layer is built, dpkg and run: steps included.
#   - RUNS rounds, the two arms interleaved; medians and their ratio.
#   - Bytes: one more push of each arm through bench/registry.py's counting proxy
#     (not timed); the difference over the number of client images is an upper bound
#     of the evidence's traffic per client (it includes the bases' and cores').
# Moodle: MOODLE_45_SRC and MOODLE_51_SRC (checkouts of real releases) when set, else
# ci/standin-moodle trees. A report, not a test: exits 0 once it has measured; n/a
# where it has not.
#
# Environment: CLIENTS (50), RUNS (2), MOODLE_45_SRC, MOODLE_51_SRC, IMGBUILD,
# IMGBUILD_NO_BUILD=1, BENCH_WORK.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS=${CLIENTS:-50}
RUNS=${RUNS:-2}
# Tags carry the project's commit: a fixed one, the same in every round.
export IMGBUILD_REVISION=5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e
OUT=$WORK/supply-fleet
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.stderr
REG=$BENCH_DIR/registry.py
command -v docker-registry >/dev/null || { warn "docker-registry is not installed"; exit 1; }
ensure_imgbuild
[[ $IMGBUILD_OK == 1 ]] || { warn "no imgbuild: nothing measured"; exit 0; }

# --- the project: the repository's graph, CLIENTS clients -----------------------------
proj=$OUT/project
rm -rf --one-file-system "$proj"
mkdir -p "$proj/clients"
cp -a "$REPO_DIR/images.yaml" "$REPO_DIR/layers" "$proj/"
[[ -f $REPO_DIR/images.lock ]] && cp -a "$REPO_DIR/images.lock" "$proj/"
# clone TEMPLATE NAME: a client like TEMPLATE, every mention of its name renamed.
clone() {
    local from=$REPO_DIR/clients/$1 to=$proj/clients/$2 f rel
    while IFS= read -r -d '' f; do
        rel=${f#"$from"/}
        mkdir -p "$(dirname "$to/${rel//$1/$2}")"
        sed "s/$1/$2/g" "$f" >"$to/${rel//$1/$2}"
    done < <(find "$from" -type f -print0)
}
for ((i = 1; i <= CLIENTS; i++)); do
    if ((i % 2)); then t=acme; else t=initech; fi
    clone "$t" "$(printf '%s%02d' "$t" "$i")"
done
# The trees go inside the project (the build context), hard-linked when given.
srcs=()
for line in 4.5 5.1; do
    var=MOODLE_${line/./}_SRC dest=$proj/upstream/moodle-$line
    mkdir -p "$proj/upstream"
    if [[ -n ${!var:-} ]]; then
        cp -al "${!var}" "$dest" 2>/dev/null || cp -a "${!var}" "$dest"
        log "moodle $line: ${!var}"
    else
        "$REPO_DIR/ci/standin-moodle" "$dest" "$line"
        log "moodle $line: a ci/standin-moodle tree"
    fi
    srcs+=(--set "moodle_${line/./}_src=upstream/moodle-$line")
done
ib() { (cd "$proj" && "$IMGBUILD" -q "${srcs[@]}" "$@"); }
images=$(ib graph --format json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["images"]))')
log "project: $proj, $images images ($CLIENTS clients)"

# --- warm: the lock and the Debian packages (not timed) --------------------------------
warm=$OUT/warm-home
log "warm: lock and one build, for the Debian packages (not timed)"
IMGBUILD_HOME=$warm ib lock >"$OUT/lock.log" 2>&1 || { warn "lock failed: $(tail -n 3 "$OUT/lock.log")"; exit 1; }
IMGBUILD_HOME=$warm ib build --all --locked >"$OUT/warm.log" 2>&1 ||
    { warn "the warm build failed: $(tail -n 5 "$OUT/warm.log")"; exit 1; }
export IMGBUILD_SIGN_PASSWORD=bench
rm -f "$OUT/key.key" "$OUT/key.pub"
"$IMGBUILD" -q keygen --prefix "$OUT/key"

trap reg_stop_all EXIT
args() { # MODE
    [[ $1 == evidence ]] && printf -- '--sbom --provenance --sign-key %q' "$OUT/key.key"
    return 0
}
cold=$OUT/cold-home
# A cold store holding only the verified Debian packages and indexes.
seed() { reset_dir "$cold" && mkdir -p "$cold" && cp -a "$warm/debian" "$cold/debian" && sync; }
for ((r = 1; r <= RUNS; r++)); do
    for mode in $(order "$r"); do
        reg_start "$mode$r"
        log "round $r: cold build --all --push ($mode)"
        cmd="cd $(q "$proj") && IMGBUILD_HOME=$(q "$cold") $(q "$IMGBUILD") -q ${srcs[*]} build --all --locked --push --registry 127.0.0.1:$PORT/fleet $(args "$mode")"
        seed
        fresh_caches "$proj" "$cold/debian"
        measure --name "fleet-$mode" --out "$OUT/$mode.json" --append --runs 1 -- "$cmd" ||
            warn "round $r ($mode) failed: see $OUT"
        reg_stop "$mode$r"
    done
done

# evidence_sizes PORT: per repository of the registry, the bytes of what is attached
# to its :latest image (the referrers index, each referrer's manifest and blobs,
# cosign's `.sig` included), as JSON {repo: bytes}.
evidence_sizes() {
    python3 - "$1" <<'PY'
import json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}/v2"
ACCEPT = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
def get(path, head=False):
    req = urllib.request.Request(base + path, method="HEAD" if head else "GET", headers={"Accept": ACCEPT})
    with urllib.request.urlopen(req) as r:
        return r.headers, (b"" if head else r.read())
repos = json.loads(get("/_catalog?n=1000")[1])["repositories"]
out = {}
for repo in repos:
    digest = get(f"/{repo}/manifests/latest", head=True)[0]["Docker-Content-Digest"]
    _, index = get(f"/{repo}/manifests/sha256-{digest.split(':')[1]}")
    total = len(index)
    for e in json.loads(index)["manifests"]:
        _, m = get(f"/{repo}/manifests/{e['digest']}")
        m = json.loads(m)
        total += e["size"] + m["config"]["size"] + sum(l["size"] for l in m["layers"])
    out[repo.split("/")[-1]] = total
print(json.dumps(out, sort_keys=True))
PY
}
for mode in plain evidence; do
    reg_start "count-$mode"
    log "bytes: push --all ($mode) through the counting proxy (not timed)"
    # shellcheck disable=SC2046
    if IMGBUILD_HOME=$warm ib push --all --registry "127.0.0.1:$PROXY/fleet" $(args "$mode") >/dev/null 2>"$OUT/count-$mode.stderr"; then
        python3 "$REG" snapshot "$OUT/reg-count-$mode" >"$OUT/count-$mode.json"
        [[ $mode == evidence ]] && evidence_sizes "$PORT" >"$OUT/sizes.json"
    else
        warn "push ($mode) through the proxy failed: $(tail -n 3 "$OUT/count-$mode.stderr")"
    fi
    reg_stop "count-$mode"
done

python3 - "$OUT" "$images" "$CLIENTS" <<'PY'
import json, sys
out, images, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def median(mode):
    try:
        r = json.load(open(f"{out}/{mode}.json"))
        return r["median_s"] if r.get("ok", True) else None
    except (OSError, KeyError, ValueError):
        return None
def count(mode, key):
    try:
        snap = json.load(open(f"{out}/count-{mode}.json"))
        return snap["counts"][key] if key in snap["counts"] else snap[key]
    except (OSError, KeyError, ValueError):
        return None
fmt = lambda v, f: "n/a" if v is None else f.format(v)
p, e = median("plain"), median("evidence")
ratio = e / p if p and e else None
bp, be = count("plain", "up_bytes"), count("evidence", "up_bytes")
per_client = (be - bp) / clients if bp is not None and be is not None else None
print(f"images                        {images} ({clients} clients)")
print(f"cold build --all --push       {fmt(p, '{:.1f} s')}")
print(f"  with evidence               {fmt(e, '{:.1f} s')}")
print(f"  ratio                       {fmt(ratio, '{:.3f}')}  (target <= 1.10)")
print(f"evidence bytes / client image {fmt(per_client, '{:.0f} B')}  (upper bound: all images' evidence traffic / clients)")
try:
    sizes = json.load(open(f"{out}/sizes.json"))
    cl = sorted(v for k, v in sizes.items() if k.startswith("client-"))
    rest = {k: v for k, v in sizes.items() if not k.startswith("client-")}
    print(f"attached per client image     mean {sum(cl) / len(cl):.0f} B, max {cl[-1]} B over {len(cl)}  (target <= 51200 B)")
    print("attached to the others        " + ", ".join(f"{k} {v} B" for k, v in sorted(rest.items())))
    # Both directions, headers included, less what is attached to the bases and
    # cores: still an upper bound per client (the others' requests are in it).
    up, down = count("evidence", "up_bytes"), count("evidence", "down_bytes")
    up0, down0 = count("plain", "up_bytes"), count("plain", "down_bytes")
    if None not in (up, down, up0, down0):
        traffic = (up + down - up0 - down0 - sum(rest.values())) / clients
        print(f"evidence traffic / client     {traffic:.0f} B  (up and down, less the others' attachments; target <= 51200 B)")
    else:
        print("evidence traffic / client     n/a")
except (OSError, ValueError, ZeroDivisionError, IndexError):
    print("attached per client image     n/a")
PY
