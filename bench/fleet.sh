#!/usr/bin/env bash
# fleet.sh: the fleet benchmark. A Moodle image (the core tree as one layer from
# scratch) and CLIENTS (50) client images client-01..client-NN, each `from: moodle`
# plus one layer of its own ~200 files / 2 MiB at /var/www/moodle/theme/client-NN.
# Timed in one run: imgbuild `build --all` cold, with no change, and after one file
# of one client changed; buildah: moodle once, then every client FROM it, then the
# one changed client again. A report, not a test: always exits 0 once it has measured.
# The one-change figure counts only when each run's `build --json` says exactly one
# layer was built; buildah's fleet total is the sum of two separately measured means.
#
# Environment: CLIENTS (50), FLEET_RUNS (3) cold imgbuild runs, CHANGE_RUNS (5),
# BUILDAH_FLEET_RUNS (1) full buildah fleets, BUILDAH_CHANGE_RUNS (3), CHANGE_CLIENT (17),
# SEED/FILES/MIB for the core tree, IMGBUILD, IMGBUILD_NO_BUILD=1, SKIP_IMGBUILD=1,
# SKIP_BUILDAH=1, BUILDAH_DRIVER (vfs), BENCH_WORK (bench/work).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS=${CLIENTS:-50}
FLEET_RUNS=${FLEET_RUNS:-3}
CHANGE_RUNS=${CHANGE_RUNS:-5}
BUILDAH_FLEET_RUNS=${BUILDAH_FLEET_RUNS:-1}
BUILDAH_CHANGE_RUNS=${BUILDAH_CHANGE_RUNS:-3}
CHANGE_CLIENT=${CHANGE_CLIENT:-17}
if ((CHANGE_CLIENT > CLIENTS)); then CHANGE_CLIENT=$CLIENTS; fi

OUT=$WORK/fleet
mkdir -p "$WORK" "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.stderr "$OUT"/*.stdout "$OUT"/*.built
ensure_moodle_tree

# --- the client trees -------------------------------------------------------------
names=()
for ((i = 1; i <= CLIENTS; i++)); do names+=("$(printf 'client-%02d' "$i")"); done
for n in "${names[@]}"; do
    if [[ ! -f $WORK/clients/$n.stats.json ]]; then
        rm -rf --one-file-system "${WORK:?}/clients/$n"
        python3 "$BENCH_DIR/gen-client-tree.py" "$WORK/clients/$n" --seed "$((10#${n#client-}))" \
            --name "${n//-/}" --stats "$WORK/clients/$n.stats.json" --quiet
    fi
done
log "clients: ${#names[@]} trees under $WORK/clients"
python3 - "$WORK/clients" "$OUT/extra.json" "${names[@]}" <<'EOF'
import json, sys
d, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
st = [json.load(open(f"{d}/{n}.stats.json")) for n in names]
json.dump({"clients": len(names),
           "client_files": round(sum(s["files"] for s in st) / len(st)),
           "client_mib": sum(s["bytes"] for s in st) / len(st) / 2**20}, open(out, "w"))
EOF

# --- the graph, for both tools ----------------------------------------------------
{
    echo "# Written by bench/fleet.sh: Moodle core plus ${#names[@]} clients."
    echo "images:"
    echo "  moodle:"
    echo "    from: scratch"
    echo "    layers:"
    echo "      - {src: moodle-tree, dest: /var/www/moodle}"
    for n in "${names[@]}"; do
        echo "  $n:"
        echo "    from: moodle"
        echo "    layers:"
        echo "      - {src: clients/$n, dest: /var/www/moodle/theme/$n}"
    done
} >"$WORK/images-fleet.yaml"
printf 'FROM scratch\nCOPY moodle-tree /var/www/moodle\n' >"$WORK/Containerfile.moodle"
# shellcheck disable=SC2016  # ${CLIENT} is for buildah
printf 'FROM localhost/bench-moodle\nARG CLIENT\nCOPY ${CLIENT} /var/www/moodle/theme/${CLIENT}\n' \
    >"$WORK/Containerfile.client"

# The file changed for the rebuilds; put back as it was whatever happens.
change_name=$(printf 'client-%02d' "$CHANGE_CLIENT")
change_file=$WORK/clients/$change_name/config.php
cp -p "$change_file" "$OUT/config.php.orig"
trap 'cp -p "$OUT/config.php.orig" "$change_file"' EXIT
change_cmd="printf '// bench change %s\n' \"\$(date +%s%N)\" >>$(q "$change_file")"

if [[ ${SKIP_IMGBUILD:-0} == 1 ]]; then
    warn "imgbuild: skipped (SKIP_IMGBUILD=1)"
    IMGBUILD_OK=0
else
    ensure_imgbuild
fi
ensure_buildah

log "warming the page cache"
warm_cache "$WORK/moodle-tree"
warm_cache "$WORK/clients"

img="$(q "$IMGBUILD") -f $(q "$WORK/images-fleet.yaml") build --all --json"
cold_home=$OUT/imgbuild-home-cold
warm_home=$OUT/imgbuild-home-warm
store=$OUT/buildah-store
bah=$(bah_cmd "$store")
bud="$bah bud --isolation chroot --layers=false --pull=never --format oci -q"
bud_moodle="$bud -f $(q "$WORK/Containerfile.moodle") -t bench-moodle $(q "$WORK")"
bud_clients="for c in ${names[*]}; do $bud --build-arg CLIENT=\$c -f $(q "$WORK/Containerfile.client") -t bench-\$c $(q "$WORK/clients") || exit; done"
bud_change="$bud --build-arg CLIENT=$change_name -f $(q "$WORK/Containerfile.client") -t bench-$change_name $(q "$WORK/clients")"

# --- cold: rounds interleave the tools --------------------------------------------
rounds=$((FLEET_RUNS > BUILDAH_FLEET_RUNS ? FLEET_RUNS : BUILDAH_FLEET_RUNS))
for ((r = 1; r <= rounds; r++)); do
    log "cold round $r/$rounds"
    if [[ $IMGBUILD_OK == 1 ]] && ((r <= FLEET_RUNS)); then
        measure --name imgbuild-fleet-cold --out "$OUT/imgbuild-cold.json" --append --runs 1 \
            --prepare "rm -rf --one-file-system $(q "$cold_home") && sync" -- \
            "IMGBUILD_HOME=$(q "$cold_home") $img >$(q "$OUT/imgbuild-cold.stdout")"
    fi
    if [[ $BUILDAH_OK == 1 ]] && ((r <= BUILDAH_FLEET_RUNS)); then
        measure --name buildah-moodle --out "$OUT/buildah-moodle.json" --append --runs 1 \
            --prepare "rm -rf --one-file-system $(q "$store") && sync" -- "$bud_moodle"
        log "buildah: ${#names[@]} client builds (this is the long part)"
        measure --name buildah-clients --out "$OUT/buildah-clients.json" --append --runs 1 -- "$bud_clients"
    fi
done
if [[ $IMGBUILD_OK == 1 ]]; then
    min_bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"] // 10)' "$WORK/moodle-tree.stats.json")
    check_real_build "$OUT/imgbuild-cold.json" "$OUT/imgbuild-cold.stdout" "$cold_home" "$min_bytes"
    rm -rf --one-file-system "$cold_home"
fi

# --- no change, and one file of one client changed ---------------------------------
if [[ $IMGBUILD_OK == 1 ]]; then
    reset_dir "$warm_home"
    if bash -c "IMGBUILD_HOME=$(q "$warm_home") $img" >"$OUT/imgbuild-first.stdout" 2>"$OUT/imgbuild-first.stderr"; then
        measure --name imgbuild-fleet-nochange --out "$OUT/imgbuild-nochange.json" --runs 5 --warmup 1 -- \
            "IMGBUILD_HOME=$(q "$warm_home") $img >$(q "$OUT/imgbuild-nochange.stdout")"
    else
        warn "imgbuild: the first build --all failed: $(tail -n 5 "$OUT/imgbuild-first.stderr")"
    fi
fi
buildah_has_fleet=0
if [[ $BUILDAH_OK == 1 ]] && python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("ok") else 1)' "$OUT/buildah-clients.json" 2>/dev/null; then
    buildah_has_fleet=1
fi
rounds=$((CHANGE_RUNS > BUILDAH_CHANGE_RUNS ? CHANGE_RUNS : BUILDAH_CHANGE_RUNS))
for ((r = 1; r <= rounds; r++)); do
    log "change round $r/$rounds ($change_file)"
    if [[ $IMGBUILD_OK == 1 && -s $OUT/imgbuild-first.stdout ]] && ((r <= CHANGE_RUNS)); then
        # Each run's build --json must say exactly one layer was built, or
        # report.py prints the figure as n/a: a count a line, in run order.
        measure --name imgbuild-fleet-change --out "$OUT/imgbuild-change.json" --append --runs 1 \
            --prepare "$change_cmd" \
            --cleanup "python3 $(q "$BENCH_DIR/results.py") built-layers $(q "$OUT/imgbuild-change.stdout") >>$(q "$OUT/imgbuild-change.built")" -- \
            "IMGBUILD_HOME=$(q "$warm_home") $img >$(q "$OUT/imgbuild-change.stdout")"
    fi
    if [[ $buildah_has_fleet == 1 ]] && ((r <= BUILDAH_CHANGE_RUNS)); then
        measure --name buildah-change --out "$OUT/buildah-change.json" --append --runs 1 \
            --prepare "$change_cmd" -- "$bud_change"
    fi
done
if [[ $IMGBUILD_OK == 1 && -s $OUT/imgbuild-first.stdout ]]; then
    check_real_build "$OUT/imgbuild-change.json" "$OUT/imgbuild-change.stdout" "$warm_home" 0
fi
if [[ $BUILDAH_OK == 1 ]]; then
    if [[ $buildah_has_fleet == 1 ]]; then
        log "buildah: $(eval "$bah images -q" | wc -l) images in storage; removing it"
    fi
    reset_dir "$store"
fi

python3 "$BENCH_DIR/report.py" fleet "$WORK" "$(versions_json)"
