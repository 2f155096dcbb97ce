#!/usr/bin/env bash
# supply.sh: what SBOM, provenance and signing add to pushing the fleet (moodle +
# CLIENTS clients, the trees of push.sh) to the real CNCF registry on 127.0.0.1:
#   1. time: `imgbuild push --all` vs `imgbuild push --all --sbom --provenance
#      --sign-key K`, each to a fresh, empty registry, RUNS rounds interleaved; the
#      fleet is built first (not timed), so the difference is the evidence: the SBOMs
#      (layers read once, then kept in the store), provenance, DSSE, signatures, and
#      the referrers index per image;
#   2. the same as the issue words it: a cold `build --all --push` (empty store and
#      registry each round), with and without the evidence;
#   3. bytes: one more push of each through bench/registry.py's counting proxy (not
#      timed); the difference, per image, is the registry traffic the evidence costs.
# A report, not a test: always exits 0 once it has measured; n/a when not measured.
#
# Environment: CLIENTS (50), RUNS (3), IMGBUILD, IMGBUILD_NO_BUILD=1, BENCH_WORK.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS=${CLIENTS:-50}
RUNS=${RUNS:-3}
export IMGBUILD_REVISION=
OUT=$WORK/supply
mkdir -p "$WORK" "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.stderr "$OUT"/*.stdout
REG=$BENCH_DIR/registry.py
command -v docker-registry >/dev/null || { warn "docker-registry is not installed"; exit 1; }

ensure_moodle_tree
ensure_clients "$CLIENTS"
ensure_imgbuild
[[ $IMGBUILD_OK == 1 ]] || { warn "no imgbuild: nothing measured"; exit 0; }
YAML=$WORK/images-supply.yaml
write_fleet_yaml "$YAML" "bench/supply.sh"
home=$OUT/imgbuild-home
reset_dir "$home"
export IMGBUILD_SIGN_PASSWORD=bench
log "building the fleet (not timed)"
IMGBUILD_HOME=$home "$IMGBUILD" -q -f "$YAML" build --all
rm -f "$OUT/key.key" "$OUT/key.pub"
"$IMGBUILD" -q keygen --prefix "$OUT/key"

trap reg_stop_all EXIT
push_cmd() { # PORT MODE
    local extra=""
    [[ $2 == evidence ]] && extra="--sbom --provenance --sign-key $(q "$OUT/key.key")"
    printf 'IMGBUILD_HOME=%s %s -q -f %s push --all --registry 127.0.0.1:%s/fleet %s' \
        "$(q "$home")" "$(q "$IMGBUILD")" "$(q "$YAML")" "$1" "$extra"
}

for ((r = 1; r <= RUNS; r++)); do
    for mode in $(order "$r"); do
        reg_start "$mode$r"
        log "round $r: push ($mode)"
        fresh_caches "$home" "$WORK/moodle-tree"
        measure --name "push-$mode" --out "$OUT/$mode.json" --append --runs 1 -- "$(push_cmd "$PORT" "$mode")"
        reg_stop "$mode$r"
    done
done
# The issue's own measure: a cold `build --all --push` (empty store, empty
# registry), with and without the evidence, RUNS rounds interleaved.
build_cmd() { # PORT MODE HOME
    local extra=""
    [[ $2 == evidence ]] && extra="--sbom --provenance --sign-key $(q "$OUT/key.key")"
    printf 'IMGBUILD_HOME=%s %s -q -f %s build --all --push --registry 127.0.0.1:%s/fleet %s' \
        "$(q "$3")" "$(q "$IMGBUILD")" "$(q "$YAML")" "$1" "$extra"
}
for ((r = 1; r <= RUNS; r++)); do
    for mode in $(order "$r"); do
        reg_start "build-$mode$r"
        reset_dir "$OUT/cold-home"
        log "round $r: cold build --all --push ($mode)"
        fresh_caches "$WORK/moodle-tree" "$WORK/clients"
        measure --name "build-$mode" --out "$OUT/build-$mode.json" --append --runs 1 -- "$(build_cmd "$PORT" "$mode" "$OUT/cold-home")"
        reg_stop "build-$mode$r"
    done
done
reset_dir "$OUT/cold-home"

for mode in plain evidence; do
    reg_start "count-$mode"
    log "bytes: push ($mode) through the counting proxy (not timed)"
    if bash -c "$(push_cmd "$PROXY" "$mode")" 2>"$OUT/count-$mode.stderr"; then
        python3 "$REG" snapshot "$OUT/reg-count-$mode" >"$OUT/count-$mode.json"
    else
        warn "push ($mode) through the proxy failed: $(tail -n 3 "$OUT/count-$mode.stderr")"
    fi
    reg_stop "count-$mode"
done

python3 - "$OUT" "$((CLIENTS + 1))" <<'PY'
import json, os, sys
out, images = sys.argv[1], int(sys.argv[2])
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
up = lambda mode: count(mode, "up_bytes")
p, e = median("plain"), median("evidence")
bp, be = up("plain"), up("evidence")
rp, re_ = count("plain", "requests"), count("evidence", "requests")
cp, ce = count("plain", "registry_cpu_s"), count("evidence", "registry_cpu_s")
fmt = lambda v, f: "n/a" if v is None else f.format(v)
ratio = e / p if p and e else None
per_image = (be - bp) / images if bp is not None and be is not None else None
print(f"images                       {images}")
print(f"push --all (median)          {fmt(p, '{:.2f} s')}")
print(f"push --all with evidence     {fmt(e, '{:.2f} s')}")
print(f"ratio                        {fmt(ratio, '{:.3f}')}  (target <= 1.10)")
bpl, bev = median("build-plain"), median("build-evidence")
bratio = bev / bpl if bpl and bev else None
print(f"cold build --all --push      {fmt(bpl, '{:.2f} s')}")
print(f"  with evidence              {fmt(bev, '{:.2f} s')}")
print(f"  ratio                      {fmt(bratio, '{:.3f}')}  (a synthetic worst case; the agency's fleet: supply-fleet.sh; target <= 1.10)")
print(f"evidence bytes per image     {fmt(per_image, '{:.0f} B')}  (target <= 51200 B)")
# The counting pushes' requests and the registry's CPU: on a loopback registry each
# request costs the server CPU, which is most of what the evidence adds.
req = (re_ - rp) / images if rp is not None and re_ is not None else None
print(f"requests (plain / evidence)  {fmt(rp, '{}')} / {fmt(re_, '{}')}  ({fmt(req, '{:.1f}')} more per image)")
print(f"registry CPU (plain / evid.) {fmt(cp, '{:.2f} s')} / {fmt(ce, '{:.2f} s')}")
json.dump({"images": images, "plain_s": p, "evidence_s": e, "ratio": ratio,
           "build_plain_s": bpl, "build_evidence_s": bev, "build_ratio": bratio,
           "bytes_plain": bp, "bytes_evidence": be, "evidence_bytes_per_image": per_image,
           "requests_plain": rp, "requests_evidence": re_,
           "registry_cpu_plain_s": cp, "registry_cpu_evidence_s": ce},
          open(f"{out}/supply.json", "w"), indent=2)
PY
