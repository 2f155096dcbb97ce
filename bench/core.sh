#!/usr/bin/env bash
# core.sh: the single-layer benchmark. One Moodle-shaped tree as one layer, timed
# in one run for: the tar | pigz | sha256sum pipeline (the physical limit),
# imgbuild (cold build, no-change rebuild, peak RSS) and buildah (COPY from
# scratch into vfs storage; and the push that compresses it to an OCI layout).
# A report, not a test: it prints ratios against the targets and exits 0 once it
# has measured (a tool that fails or is missing is reported as n/a or failed).
#
# Environment: RUNS (5) for pigz and imgbuild, NOCHANGE_RUNS (10), BUILDAH_RUNS (3),
# SEED/FILES/MIB for the tree, IMGBUILD, IMGBUILD_NO_BUILD=1, SKIP_IMGBUILD=1,
# SKIP_BUILDAH=1, BUILDAH_DRIVER (vfs), BENCH_WORK (bench/work).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-5}
NOCHANGE_RUNS=${NOCHANGE_RUNS:-10}
BUILDAH_RUNS=${BUILDAH_RUNS:-3}

OUT=$WORK/core
mkdir -p "$WORK" "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.stderr "$OUT"/*.stdout
ensure_moodle_tree
TREE=$WORK/moodle-tree

cat >"$WORK/images-core.yaml" <<'YAML'
# Written by bench/core.sh: the Moodle tree as one layer from scratch.
images:
  moodle:
    from: scratch
    layers:
      - {src: moodle-tree, dest: /var/www/moodle}
YAML
printf 'FROM scratch\nCOPY moodle-tree /var/www/moodle\n' >"$WORK/Containerfile.moodle"

if [[ ${SKIP_IMGBUILD:-0} == 1 ]]; then
    warn "imgbuild: skipped (SKIP_IMGBUILD=1)"
    IMGBUILD_OK=0
else
    ensure_imgbuild
fi
ensure_buildah

log "warming the page cache"
warm_cache "$TREE"

pigz_cmd="tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - -C $(q "$TREE") . | pigz -p2 | sha256sum"
img="$(q "$IMGBUILD") -f $(q "$WORK/images-core.yaml") build moodle --json"
cold_home=$OUT/imgbuild-home-cold
warm_home=$OUT/imgbuild-home-warm
store=$OUT/buildah-store
bah=$(bah_cmd "$store")
bud_cmd="$bah bud --isolation chroot --layers=false --pull=never --format oci -q -f $(q "$WORK/Containerfile.moodle") -t bench-moodle $(q "$WORK")"
boci=$OUT/buildah-oci

# Rounds interleave the tools (pigz, imgbuild, buildah, pigz, ...), so that load
# from anything else on the machine falls on all of them alike.
rounds=$((RUNS > BUILDAH_RUNS ? RUNS : BUILDAH_RUNS))
for ((r = 1; r <= rounds; r++)); do
    log "round $r/$rounds"
    warmup=0
    if ((r == 1)); then warmup=1; fi
    if ((r <= RUNS)); then
        measure --name pigz-pipeline --out "$OUT/pigz.json" --append --runs 1 --warmup "$warmup" -- "$pigz_cmd"
    fi
    if [[ $IMGBUILD_OK == 1 ]] && ((r <= RUNS)); then
        # cold: a fresh IMGBUILD_HOME for every run
        measure --name imgbuild-cold --out "$OUT/imgbuild-cold.json" --append --runs 1 \
            --prepare "rm -rf --one-file-system $(q "$cold_home") && sync" -- \
            "IMGBUILD_HOME=$(q "$cold_home") $img >$(q "$OUT/imgbuild-cold.stdout")"
    fi
    if [[ $BUILDAH_OK == 1 ]] && ((r <= BUILDAH_RUNS)); then
        # buildah's storage is removed before every run
        measure --name buildah-bud --out "$OUT/buildah-bud.json" --append --runs 1 \
            --prepare "rm -rf --one-file-system $(q "$store") && sync" -- "$bud_cmd"
        # then the image just built is written as an OCI layout: the step where
        # buildah compresses (gzip), which imgbuild does while it builds
        measure --name buildah-push-oci --out "$OUT/buildah-push.json" --append --runs 1 \
            --prepare "rm -rf --one-file-system $(q "$boci") && sync" -- \
            "$bah push -q bench-moodle oci:$(q "$boci"):bench-moodle"
    fi
done
if [[ $BUILDAH_OK == 1 ]]; then
    reset_dir "$store"
fi
if [[ $IMGBUILD_OK == 1 ]]; then
    # the layer compresses to ~40 % of the tree: a store under 10 % of it holds no layer
    min_bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"] // 10)' "$WORK/moodle-tree.stats.json")
    check_real_build "$OUT/imgbuild-cold.json" "$OUT/imgbuild-cold.stdout" "$cold_home" "$min_bytes"
fi

if [[ $IMGBUILD_OK == 1 ]]; then
    log "imgbuild no-change rebuild ($NOCHANGE_RUNS runs, one IMGBUILD_HOME)"
    reset_dir "$warm_home"
    if IMGBUILD_HOME=$warm_home "$IMGBUILD" -f "$WORK/images-core.yaml" build moodle --json \
        >"$OUT/imgbuild-first.stdout" 2>"$OUT/imgbuild-first.stderr"; then
        measure --name imgbuild-nochange --out "$OUT/imgbuild-nochange.json" \
            --runs "$NOCHANGE_RUNS" --warmup 1 -- \
            "IMGBUILD_HOME=$(q "$warm_home") $img >$(q "$OUT/imgbuild-nochange.stdout")"
        check_real_build "$OUT/imgbuild-nochange.json" "$OUT/imgbuild-nochange.stdout" "$warm_home" "$min_bytes"
        # A light check that a real image came out: an OCI layout that skopeo reads.
        oci=$OUT/imgbuild-oci
        rm -rf --one-file-system "$oci"
        if IMGBUILD_HOME=$warm_home "$IMGBUILD" -f "$WORK/images-core.yaml" build moodle \
            --output "oci:$oci" >/dev/null 2>"$OUT/imgbuild-output.stderr" &&
            skopeo inspect "oci:$oci:moodle" >"$OUT/imgbuild-skopeo.out" 2>>"$OUT/imgbuild-output.stderr"; then
            log "imgbuild: skopeo reads the OCI layout it wrote"
        else
            warn "imgbuild: --output oci: + skopeo inspect did not work (see $OUT/imgbuild-output.stderr)"
        fi
    else
        warn "imgbuild: the first build failed: $(tail -n 5 "$OUT/imgbuild-first.stderr")"
    fi
fi

# Output sizes, so that speed is compared at a like compression ratio.
log "output sizes"
layer_bytes() { skopeo inspect --raw "$1" 2>/dev/null | python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))' 2>/dev/null || echo null; }
pigz_bytes=$(bash -c "${pigz_cmd% | sha256sum} | wc -c")
img_bytes=null
bud_bytes=null
if [[ $IMGBUILD_OK == 1 && -d $OUT/imgbuild-oci ]]; then img_bytes=$(layer_bytes "oci:$OUT/imgbuild-oci:moodle"); fi
if [[ $BUILDAH_OK == 1 && -d $boci ]]; then bud_bytes=$(layer_bytes "oci:$boci:bench-moodle"); fi
printf '{"pigz-pipeline": %s, "imgbuild-cold": %s, "buildah-push-oci": %s}\n' \
    "$pigz_bytes" "$img_bytes" "$bud_bytes" >"$OUT/sizes.json"

python3 "$BENCH_DIR/report.py" core "$WORK" "$(versions_json)"
