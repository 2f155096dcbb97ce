#!/usr/bin/env bash
# push.sh: the registry benchmark, against the real CNCF distribution registry
# (Debian's `docker-registry`) on 127.0.0.1, a fresh one with empty storage for every
# timed push. In one run:
#   1. the fleet (moodle + CLIENTS clients, as in fleet.sh; built first, not timed)
#      pushed to an empty registry: `imgbuild push --all` vs a loop of
#      `skopeo copy oci:DIR:NAME docker://…` (skopeo copies one image per call); then
#      `imgbuild push --all` again, which must upload no blob. Bytes the registry
#      received are counted by a proxy in front of it, in one more push per tool that
#      is not timed (the proxy is Python: it would slow the timed ones);
#   2. re-tagging every client `:latest` as `:5.1.4`: a loop of CLIENTS `imgbuild tag`
#      calls vs a loop of `skopeo copy docker://…:latest docker://…:5.1.4`;
#   3. one image with one layer of BIG_MIB (300) MiB of random bytes pushed to an empty
#      registry: peak RSS and time, imgbuild vs skopeo;
#   4. a flaky registry: 20 images (moodle and 19 clients) pushed through a proxy that
#      injects seeded faults (503, connections cut, 429 with Retry-After: 1) at each of
#      FLAKY_RATES, `imgbuild push` vs one `skopeo copy --retry-times 5` per image, each
#      to a fresh registry: the tags complete afterwards (the layout's manifest, every
#      blob stored), as the registry says, printed as N / 20 per tool (n/a: not measured).
# A report, not a test: always exits 0 once it has measured.
#
# Environment: CLIENTS (50), PUSH_RUNS (5) timed fleet pushes per tool, TAG_RUNS (5)
# timed tag loops per tool, BIG_MIB (300), BIG_RUNS (3), PUSH_TAG (5.1.4),
# SEED/FILES/MIB for the core tree, IMGBUILD, IMGBUILD_NO_BUILD=1, SKIP_IMGBUILD=1,
# SKIP_SKOPEO=1, SKIP_BIG=1, SKIP_FLAKY=1, FLAKY_RATES ("P503:PDROP:P429 …", default
# "0.05:0.05:0.02 0.20:0.20:0.10"), FLAKY_SEED (13), BENCH_WORK (bench/work).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS=${CLIENTS:-50}
PUSH_RUNS=${PUSH_RUNS:-5}
TAG_RUNS=${TAG_RUNS:-5}
BIG_MIB=${BIG_MIB:-300}
BIG_RUNS=${BIG_RUNS:-3}
PUSH_TAG=${PUSH_TAG:-5.1.4}

# Images carry the git HEAD of the checkout as a label unless told otherwise: a commit
# landing during the run would change every image config between two pushes.
export IMGBUILD_REVISION=

OUT=$WORK/push
mkdir -p "$WORK" "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.stderr "$OUT"/*.stdout "$OUT"/*.jsonl "$OUT"/*.log
REG=$BENCH_DIR/registry.py

if ! command -v docker-registry >/dev/null; then
    warn "docker-registry (CNCF distribution) is not installed: apt-get install docker-registry"
    exit 1
fi

ensure_moodle_tree
ensure_clients "$CLIENTS"
names=(moodle "${CLIENT_NAMES[@]}")
python3 - "$WORK/clients" "$OUT/extra.json" "$BIG_MIB" "${CLIENT_NAMES[@]}" <<'EOF'
import json, sys
d, out, big_mib, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
st = [json.load(open(f"{d}/{n}.stats.json")) for n in names]
json.dump({"clients": len(names),
           "client_files": round(sum(s["files"] for s in st) / max(len(st), 1)),
           "client_mib": sum(s["bytes"] for s in st) / max(len(st), 1) / 2**20,
           "big_mib": big_mib}, open(out, "w"))
EOF

# --- the graphs --------------------------------------------------------------------
YAML=$WORK/images-push.yaml
write_fleet_yaml "$YAML" "bench/push.sh"
BIG_YAML=$WORK/images-push-big.yaml
cat >"$BIG_YAML" <<'YAML'
# Written by bench/push.sh: one layer of random (incompressible) bytes.
images:
  big:
    from: scratch
    layers:
      - {src: big-tree, dest: /data}
YAML

if [[ ${SKIP_IMGBUILD:-0} == 1 ]]; then
    warn "imgbuild: skipped (SKIP_IMGBUILD=1)"
    IMGBUILD_OK=0
else
    ensure_imgbuild
fi
SKOPEO_OK=0
if [[ ${SKIP_SKOPEO:-0} == 1 ]]; then
    warn "skopeo: skipped (SKIP_SKOPEO=1)"
elif ! command -v skopeo >/dev/null; then
    warn "skopeo: not installed; its rows are n/a (apt-get install skopeo)"
else
    SKOPEO_OK=1
fi
if [[ $IMGBUILD_OK != 1 ]]; then
    # skopeo copies the OCI layout that imgbuild writes: without imgbuild there is none.
    warn "no imgbuild, no OCI layout to push: skopeo's rows are n/a too"
    SKOPEO_OK=0
fi

# --- registries --------------------------------------------------------------------
# reg_start NAME [CHAOS]: a fresh registry (empty storage) behind a counting proxy (with
# CHAOS, SEED:P503:PDROP:P429, a fault-injecting one instead), under $OUT/reg-NAME; sets
# REG_PORT[NAME] (the registry) and REG_PROXY[NAME] (the proxy).
declare -A REG_PID=() REG_PORT=() REG_PROXY=()
reg_start() {
    local name=$1 dir=$OUT/reg-$1 i chaos=()
    [[ -n ${2:-} ]] && chaos=(--chaos "$2")
    reset_dir "$dir"
    mkdir -p "$dir"
    python3 "$REG" serve "$dir" "${chaos[@]}" >"$OUT/reg-$name.log" 2>&1 &
    REG_PID[$name]=$!
    for ((i = 0; i < 300; i++)); do
        [[ -s $dir/state.json ]] && break
        if ! kill -0 "${REG_PID[$name]}" 2>/dev/null; then
            warn "registry $name did not start: $(tail -n 20 "$OUT/reg-$name.log")"
            exit 1
        fi
        sleep 0.1
    done
    REG_PORT[$name]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$dir/state.json")
    REG_PROXY[$name]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["proxy_port"])' "$dir/state.json")
}
# reg_stop NAME: stop it and remove its storage (its log and counters stay).
reg_stop() {
    local name=$1
    kill "${REG_PID[$name]}" 2>/dev/null || true
    wait "${REG_PID[$name]}" 2>/dev/null || true
    unset -v 'REG_PID[$name]'
    reset_dir "$OUT/reg-$name/storage"
}
stop_all() {
    local name
    for name in "${!REG_PID[@]}"; do
        kill "${REG_PID[$name]}" 2>/dev/null || true
    done
}
trap stop_all EXIT
# record NAME KIND ROUND [record options...]: what the last command did to the registry.
record() {
    local name=$1 kind=$2 round=$3
    shift 3
    python3 "$REG" record "$OUT/reg-$name" --out "$OUT/runs.jsonl" --kind "$kind" --round "$round" "$@" >/dev/null
}
# snapshot NAME: log length, counters and registry CPU time now, in $OUT/reg-NAME.snap.
snapshot() { python3 "$REG" snapshot "$OUT/reg-$1" >"$OUT/reg-$1.snap"; }

# --- commands, as strings for measure.py ---------------------------------------------
home=$OUT/imgbuild-home
oci=$OUT/oci
big_home=$OUT/big-home
big_oci=$OUT/big-oci
# img_push PORT STDOUT: imgbuild push --all of the fleet to 127.0.0.1:PORT/fleet
img_push() {
    printf 'IMGBUILD_HOME=%s %s -f %s push --all --registry 127.0.0.1:%s/fleet --json >%s' \
        "$(q "$home")" "$(q "$IMGBUILD")" "$(q "$YAML")" "$1" "$(q "$2")"
}
# sko_push PORT: one `skopeo copy` per image, moodle first (so that skopeo may mount
# its layer into the clients' repositories, as it does when it knows where a blob is).
sko_push() {
    echo "for n in ${names[*]}; do skopeo --insecure-policy copy -q --dest-tls-verify=false oci:$(q "$oci"):\$n docker://127.0.0.1:$1/fleet/\$n:latest || exit; done"
}
# img_tag PORT / sko_tag PORT: every client's :latest tagged PUSH_TAG, one call each.
img_tag() {
    echo "cd $(q "$OUT") && for n in ${CLIENT_NAMES[*]}; do IMGBUILD_HOME=$(q "$home") $(q "$IMGBUILD") tag -q 127.0.0.1:$1/fleet/\$n:latest $(q "$PUSH_TAG") >/dev/null || exit; done"
}
sko_tag() {
    echo "for n in ${CLIENT_NAMES[*]}; do skopeo --insecure-policy copy -q --src-tls-verify=false --dest-tls-verify=false docker://127.0.0.1:$1/fleet/\$n:latest docker://127.0.0.1:$1/fleet/\$n:$(q "$PUSH_TAG") || exit; done"
}
img_push_big() {
    printf 'IMGBUILD_HOME=%s %s -f %s push big --registry 127.0.0.1:%s/big --json >%s' \
        "$(q "$big_home")" "$(q "$IMGBUILD")" "$(q "$BIG_YAML")" "$1" "$(q "$2")"
}
sko_push_big() {
    printf 'skopeo --insecure-policy copy -q --dest-tls-verify=false oci:%s:big docker://127.0.0.1:%s/big/big:latest' \
        "$(q "$big_oci")" "$1"
}
json_get() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# --- 1. the fleet --------------------------------------------------------------------
if [[ $IMGBUILD_OK == 1 ]]; then
    log "fleet: building ${#names[@]} images into a fresh store and oci:$oci (not timed)"
    reset_dir "$home"
    reset_dir "$oci"
    if ! IMGBUILD_HOME=$home "$IMGBUILD" -f "$YAML" build --all -o "oci:$oci" -q >"$OUT/build.stdout" 2>"$OUT/build.stderr"; then
        warn "imgbuild build --all failed: $(tail -n 5 "$OUT/build.stderr")"
        IMGBUILD_OK=0
        SKOPEO_OK=0
    fi
fi
if [[ $IMGBUILD_OK == 1 ]]; then
    python3 "$REG" layout "$oci" "${names[@]}" >"$OUT/layout.json"
    unique_bytes=$(json_get "$OUT/layout.json" blob_bytes)
    log "fleet: $(json_get "$OUT/layout.json" blobs) unique blobs, $((unique_bytes >> 20)) MiB, in ${#names[@]} images"
    warm_cache "$home"
    warm_cache "$oci"

    for ((r = 1; r <= PUSH_RUNS; r++)); do
        log "fleet push round $r/$PUSH_RUNS"
        reg_start "img$r"
        port=${REG_PORT[img$r]}
        snapshot "img$r"
        measure --name imgbuild-push-fleet --out "$OUT/imgbuild-push.json" --append --runs 1 -- \
            "$(img_push "$port" "$OUT/imgbuild-push.stdout")"
        check_real_build "$OUT/imgbuild-push.json" "$OUT/imgbuild-push.stdout" "$home" 0
        python3 "$REG" verify "$OUT/reg-img$r" "$OUT/imgbuild-push.json" --manifests "${#names[@]}" --bytes "$unique_bytes"
        record "img$r" imgbuild-push "$r" --since "$OUT/reg-img$r.snap" --push-json "$OUT/imgbuild-push.stdout"
        snapshot "img$r"
        measure --name imgbuild-push-fleet-again --out "$OUT/imgbuild-again.json" --append --runs 1 -- \
            "$(img_push "$port" "$OUT/imgbuild-again.stdout")"
        record "img$r" imgbuild-again "$r" --since "$OUT/reg-img$r.snap" --push-json "$OUT/imgbuild-again.stdout"
        if ((r > 1)); then reg_stop "img$r"; fi

        if [[ $SKOPEO_OK == 1 ]]; then
            reg_start "sko$r"
            port=${REG_PORT[sko$r]}
            snapshot "sko$r"
            measure --name skopeo-push-fleet --out "$OUT/skopeo-push.json" --append --runs 1 -- "$(sko_push "$port")"
            python3 "$REG" verify "$OUT/reg-sko$r" "$OUT/skopeo-push.json" --manifests "${#names[@]}" --bytes "$unique_bytes"
            record "sko$r" skopeo-push "$r" --since "$OUT/reg-sko$r.snap"
            if ((r > 1)); then reg_stop "sko$r"; fi
        fi
    done

    # --- 2. re-tagging, on the registries of round 1 -----------------------------------
    if [[ -n ${REG_PID[img1]:-} ]]; then
        snapshot img1
        if [[ $SKOPEO_OK == 1 ]]; then snapshot sko1; fi
        for ((r = 1; r <= TAG_RUNS; r++)); do
            log "tag round $r/$TAG_RUNS: ${#CLIENT_NAMES[@]} × :latest -> :$PUSH_TAG"
            measure --name imgbuild-tag --out "$OUT/imgbuild-tag.json" --append --runs 1 -- "$(img_tag "${REG_PORT[img1]}")"
            if [[ $SKOPEO_OK == 1 ]]; then
                measure --name skopeo-tag --out "$OUT/skopeo-tag.json" --append --runs 1 -- "$(sko_tag "${REG_PORT[sko1]}")"
            fi
        done
        record img1 imgbuild-tag "$TAG_RUNS" --since "$OUT/reg-img1.snap"
        python3 "$REG" tags "$OUT/reg-img1" fleet "$PUSH_TAG" "${CLIENT_NAMES[@]}" >"$OUT/tags-imgbuild.json"
        reg_stop img1
        if [[ $SKOPEO_OK == 1 ]]; then
            record sko1 skopeo-tag "$TAG_RUNS" --since "$OUT/reg-sko1.snap"
            python3 "$REG" tags "$OUT/reg-sko1" fleet "$PUSH_TAG" "${CLIENT_NAMES[@]}" >"$OUT/tags-skopeo.json"
            reg_stop sko1
        fi
    fi

    # --- bytes: one more push per tool, through the counting proxy, not timed ---------
    log "fleet: counting bytes (one push per tool through the proxy, not timed)"
    reg_start imgc
    snapshot imgc
    bash -c "$(img_push "${REG_PROXY[imgc]}" "$OUT/imgbuild-counted.stdout")" 2>"$OUT/imgbuild-counted.stderr" ||
        warn "imgbuild push through the proxy failed: $(tail -n 5 "$OUT/imgbuild-counted.stderr")"
    record imgc imgbuild-push-counted 0 --counts --since "$OUT/reg-imgc.snap" --push-json "$OUT/imgbuild-counted.stdout"
    snapshot imgc
    bash -c "$(img_push "${REG_PROXY[imgc]}" "$OUT/imgbuild-counted-again.stdout")" 2>>"$OUT/imgbuild-counted.stderr" ||
        warn "imgbuild push (again) through the proxy failed"
    record imgc imgbuild-again-counted 0 --counts --since "$OUT/reg-imgc.snap" --push-json "$OUT/imgbuild-counted-again.stdout"
    reg_stop imgc
    if [[ $SKOPEO_OK == 1 ]]; then
        reg_start skoc
        snapshot skoc
        bash -c "$(sko_push "${REG_PROXY[skoc]}")" 2>"$OUT/skopeo-counted.stderr" ||
            warn "skopeo through the proxy failed: $(tail -n 5 "$OUT/skopeo-counted.stderr")"
        record skoc skopeo-push-counted 0 --counts --since "$OUT/reg-skoc.snap"
        reg_stop skoc
    fi
fi

# --- 3. one 300 MiB layer --------------------------------------------------------------
if [[ $IMGBUILD_OK == 1 && ${SKIP_BIG:-0} != 1 ]]; then
    want="mib=$BIG_MIB"
    if [[ ! -f $WORK/big-tree.params || $(<"$WORK/big-tree.params") != "$want" || ! -f $WORK/big-tree/random.bin ]]; then
        log "big: writing $WORK/big-tree/random.bin ($BIG_MIB MiB from /dev/urandom)"
        rm -rf --one-file-system "$WORK/big-tree" "$WORK/big-tree.params"
        mkdir -p "$WORK/big-tree"
        head -c "$((BIG_MIB << 20))" /dev/urandom >"$WORK/big-tree/random.bin"
        touch -d '2024-01-01 00:00:00 UTC' "$WORK/big-tree/random.bin"
        printf '%s\n' "$want" >"$WORK/big-tree.params"
    fi
    log "big: building one image of one $BIG_MIB MiB layer (not timed)"
    reset_dir "$big_home"
    reset_dir "$big_oci"
    if IMGBUILD_HOME=$big_home "$IMGBUILD" -f "$BIG_YAML" build big -o "oci:$big_oci" -q >"$OUT/big-build.stdout" 2>"$OUT/big-build.stderr"; then
        python3 "$REG" layout "$big_oci" big >"$OUT/big-layout.json"
        big_bytes=$(json_get "$OUT/big-layout.json" blob_bytes)
        warm_cache "$big_home"
        warm_cache "$big_oci"
        for ((r = 1; r <= BIG_RUNS; r++)); do
            log "big push round $r/$BIG_RUNS"
            reg_start bigi
            snapshot bigi
            measure --name imgbuild-push-big --out "$OUT/imgbuild-big.json" --append --runs 1 -- \
                "$(img_push_big "${REG_PORT[bigi]}" "$OUT/imgbuild-big.stdout")"
            check_real_build "$OUT/imgbuild-big.json" "$OUT/imgbuild-big.stdout" "$big_home" 0
            python3 "$REG" verify "$OUT/reg-bigi" "$OUT/imgbuild-big.json" --manifests 1 --bytes "$big_bytes"
            record bigi imgbuild-big "$r" --since "$OUT/reg-bigi.snap" --push-json "$OUT/imgbuild-big.stdout"
            reg_stop bigi
            if [[ $SKOPEO_OK == 1 ]]; then
                reg_start bigs
                snapshot bigs
                measure --name skopeo-push-big --out "$OUT/skopeo-big.json" --append --runs 1 -- "$(sko_push_big "${REG_PORT[bigs]}")"
                python3 "$REG" verify "$OUT/reg-bigs" "$OUT/skopeo-big.json" --manifests 1 --bytes "$big_bytes"
                record bigs skopeo-big "$r" --since "$OUT/reg-bigs.snap"
                reg_stop bigs
            fi
        done
        log "big: counting bytes (one push per tool through the proxy, not timed)"
        reg_start bigic
        snapshot bigic
        bash -c "$(img_push_big "${REG_PROXY[bigic]}" "$OUT/imgbuild-big-counted.stdout")" 2>"$OUT/imgbuild-big-counted.stderr" ||
            warn "imgbuild push big through the proxy failed"
        record bigic imgbuild-big-counted 0 --counts --since "$OUT/reg-bigic.snap" --push-json "$OUT/imgbuild-big-counted.stdout"
        reg_stop bigic
        if [[ $SKOPEO_OK == 1 ]]; then
            reg_start bigsc
            snapshot bigsc
            bash -c "$(sko_push_big "${REG_PROXY[bigsc]}")" 2>"$OUT/skopeo-big-counted.stderr" ||
                warn "skopeo big through the proxy failed"
            record bigsc skopeo-big-counted 0 --counts --since "$OUT/reg-bigsc.snap"
            reg_stop bigsc
        fi
    else
        warn "imgbuild build big failed: $(tail -n 5 "$OUT/big-build.stderr")"
    fi
    reset_dir "$big_home"
    reset_dir "$big_oci"
fi

# --- 4. a flaky registry ---------------------------------------------------------------
FLAKY_RATES=${FLAKY_RATES:-"0.05:0.05:0.02 0.20:0.20:0.10"}
FLAKY_SEED=${FLAKY_SEED:-13}
flaky_names=(moodle "${CLIENT_NAMES[@]:0:19}")
declare -A FLAKY=()
# flaky_count NAME TOOL RATE: the tags complete on registry NAME, into FLAKY[TOOL@RATE].
flaky_count() {
    local got
    if got=$(python3 "$REG" complete "$OUT/reg-$1" flaky "$oci" "${flaky_names[@]}" 2>>"$OUT/flaky.stderr"); then
        printf '%s\n' "$got" >"$OUT/flaky-$2-${3//[.:]/_}.json"
        FLAKY[$2@$3]=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["complete"])' "$got")
    fi
}
if [[ $IMGBUILD_OK == 1 && ${SKIP_FLAKY:-0} != 1 ]]; then
    for rate in $FLAKY_RATES; do
        log "flaky registry, faults $rate (503:cut:429): imgbuild push of ${#flaky_names[@]} images"
        reg_start flakyi "$FLAKY_SEED:$rate"
        IMGBUILD_HOME=$home "$IMGBUILD" -f "$YAML" push "${flaky_names[@]}" \
            --registry "127.0.0.1:${REG_PROXY[flakyi]}/flaky" --json \
            >"$OUT/flaky-imgbuild.stdout" 2>>"$OUT/flaky-imgbuild.stderr" ||
            warn "imgbuild push through faults $rate failed: $(tail -n 3 "$OUT/flaky-imgbuild.stderr")"
        flaky_count flakyi imgbuild "$rate"
        reg_stop flakyi
        if [[ $SKOPEO_OK == 1 ]]; then
            log "flaky registry, faults $rate: skopeo copy --retry-times 5, one per image"
            reg_start flakys "$FLAKY_SEED:$rate"
            for n in "${flaky_names[@]}"; do
                skopeo --insecure-policy copy -q --retry-times 5 --dest-tls-verify=false \
                    "oci:$oci:$n" "docker://127.0.0.1:${REG_PROXY[flakys]}/flaky/$n:latest" \
                    2>>"$OUT/flaky-skopeo.stderr" || true
            done
            flaky_count flakys skopeo "$rate"
            reg_stop flakys
        fi
    done
fi

python3 "$BENCH_DIR/report.py" push "$WORK" "$(versions_json)"

# The flaky registry's figures (report.py does not know them): tags completed / N.
if [[ ${SKIP_FLAKY:-0} != 1 ]]; then
    printf '\nflaky registry: tags completed / %d, faults as P(503):P(cut):P(429), seed %s\n' \
        "${#flaky_names[@]}" "$FLAKY_SEED"
    # figure N: "N / 20", or n/a when nothing was measured.
    figure() { if [[ -n $1 ]]; then printf '%s / %s' "$1" "${#flaky_names[@]}"; else printf 'n/a'; fi; }
    printf '%-20s %12s %26s\n' faults imgbuild "skopeo --retry-times 5"
    for rate in $FLAKY_RATES; do
        printf '%-20s %12s %26s\n' "$rate" "$(figure "${FLAKY[imgbuild@$rate]:-}")" \
            "$(figure "${FLAKY[skopeo@$rate]:-}")"
    done
fi
