#!/usr/bin/env bash
# lines.sh: the agency's fleet on two Moodle release lines, what issue 11 asks of it,
# in one run, against peers measured in the same run:
#   1. CLIENTS clients, half on a 4.5-shaped core and half on a 5.1-shaped core (both
#      generated Moodle-sized trees in local git repositories, fetched as `git:`
#      sources), built from nothing and pushed to a loopback registry: imgbuild
#      `build --all --push` vs buildah building and pushing the same images (the two
#      cores FROM scratch + COPY, each client FROM its core + one COPY);
#   2. one client's config.php changed, rebuilt and pushed: imgbuild `build --all
#      --push` vs buildah bud + push of that client;
#   3. a Moodle minor release on the 4.5 line (a new tag: version.php and some files
#      changed): `imgbuild plan` first (the core builds, its clients are re-pointed,
#      no client layer is built), then `build --all --push`, vs building the new core
#      alone (on a copy of the same store); client layer blobs uploaded, counted from
#      the registry's access log;
#   4. the `web` image of real fleet clients (the repository's images.yaml, with
#      ci/standin-moodle trees as ci/main uses): seconds from `docker run -d` to the
#      first 200 of /_health/live, vs PHP's built-in server in the same image.
# A report, not a test: it exits 0 once it has measured; unmeasured figures are n/a.
#
# Environment: CLIENTS (50), FULL_RUNS (2) imgbuild full builds, BUILDAH_FULL_RUNS (1),
# CHANGE_RUNS (5), BUILDAH_CHANGE_RUNS (3), CHANGE_CLIENT (7), MINOR_RUNS (2),
# CHANGED_FILES (40) files a minor release changes, WEB_RUNS (5), SKIP_WEB=1,
# FILES/MIB (29700/290) per core tree, IMGBUILD, IMGBUILD_NO_BUILD=1, SKIP_BUILDAH=1,
# BUILDAH_DRIVER (vfs), BENCH_WORK (bench/work).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS=${CLIENTS:-50}
FULL_RUNS=${FULL_RUNS:-2}
BUILDAH_FULL_RUNS=${BUILDAH_FULL_RUNS:-1}
CHANGE_RUNS=${CHANGE_RUNS:-5}
BUILDAH_CHANGE_RUNS=${BUILDAH_CHANGE_RUNS:-3}
CHANGE_CLIENT=${CHANGE_CLIENT:-7}
MINOR_RUNS=${MINOR_RUNS:-2}
CHANGED_FILES=${CHANGED_FILES:-40}
WEB_RUNS=${WEB_RUNS:-5}
if ((CHANGE_CLIENT > CLIENTS)); then CHANGE_CLIENT=1; fi
# Labels must not carry the checkout's HEAD: a commit mid-run would change every config.
export IMGBUILD_REVISION=

OUT=$WORK/lines
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.jsonl "$OUT"/*.stderr "$OUT"/*.stdout "$OUT"/*.built "$OUT"/*.txt "$OUT"/*.log
LINES=$BENCH_DIR/lines.py
REG=$BENCH_DIR/registry.py
command -v docker-registry >/dev/null || {
    warn "docker-registry is not installed: apt-get install docker-registry"
    exit 1
}

# --- the cores (git repositories, tags) and the clients ------------------------------
log "sources: two cores of $FILES files / $MIB MiB, $MINOR_RUNS minor releases on 4.5"
python3 "$LINES" sources "$WORK/lines-src" --files "$FILES" --mib "$MIB" --minors "$MINOR_RUNS" --changed "$CHANGED_FILES"
ensure_clients "$CLIENTS"
half=$(((CLIENTS + 1) / 2))
c45=("${CLIENT_NAMES[@]:0:half}")
c51=("${CLIENT_NAMES[@]:half}")
change_name=$(printf 'client-%02d' "$CHANGE_CLIENT")
python3 - "$WORK" "$OUT/extra.json" "$CHANGED_FILES" "${#c45[@]}" "${#c51[@]}" "${CLIENT_NAMES[@]}" <<'EOF'
import json, sys
w, out, changed, n45, n51, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6:]
st = [json.load(open(f"{w}/clients/{n}.stats.json")) for n in names]
src = json.load(open(f"{w}/lines-src/stats.json"))
json.dump({"clients": len(names), "clients_45": n45, "clients_51": n51,
           "client_files": round(sum(s["files"] for s in st) / len(st)),
           "client_mib": sum(s["bytes"] for s in st) / len(st) / 2**20,
           "cores": src, "changed_per_minor": src.get("changed_per_minor")}, open(out, "w"))
EOF

# --- the graph ------------------------------------------------------------------------
YAML=$WORK/images-lines.yaml
{
    echo "# Written by bench/lines.sh: two Moodle lines, ${#CLIENT_NAMES[@]} clients."
    echo "vars: {moodle_45_ref: v4.5.8}"
    echo "sources:"
    echo "  moodle-45: {git: {url: \"file://$WORK/lines-src/moodle-45\", ref: \"\${moodle_45_ref}\"}}"
    echo "  moodle-51: {git: {url: \"file://$WORK/lines-src/moodle-51\", ref: v5.1.3}}"
    echo "images:"
    for l in 45 51; do
        echo "  moodle-${l:0:1}.${l:1}:"
        echo "    from: scratch"
        echo "    layers:"
        echo "      - {source: moodle-$l, dest: /var/www/moodle, exclude: [.git]}"
        echo "    tags: [\"moodle-${l:0:1}.${l:1}:\${source.moodle-$l.release}\"]"
        echo "    config: {labels: {org.opencontainers.image.version: \"\${source.moodle-$l.release}\"}}"
    done
    for n in "${c45[@]}"; do
        echo "  $n:"
        echo "    from: moodle-4.5"
        echo "    layers: [{src: clients/$n, dest: /var/www/moodle/theme/$n}]"
        echo "    tags: [\"$n:\${source.moodle-45.release}\"]"
    done
    for n in "${c51[@]}"; do
        echo "  $n:"
        echo "    from: moodle-5.1"
        echo "    layers: [{src: clients/$n, dest: /var/www/moodle/public/theme/$n}]"
        echo "    tags: [\"$n:\${source.moodle-51.release}\"]"
    done
} >"$YAML"
# buildah's contexts: the tagged trees checked out (not timed; imgbuild's fetch is).
for l in 45 51; do
    ref=v4.5.8
    [[ $l == 51 ]] && ref=v5.1.3
    ctx=$OUT/ctx-$l
    if [[ ! -f $ctx/.ref || $(<"$ctx/.ref") != "$(git -C "$WORK/lines-src/moodle-$l" rev-parse "$ref")" ]]; then
        rm -rf --one-file-system "$ctx"
        mkdir -p "$ctx"
        git -C "$WORK/lines-src/moodle-$l" archive "$ref" | tar -x -C "$ctx"
        git -C "$WORK/lines-src/moodle-$l" rev-parse "$ref" >"$ctx/.ref"
    fi
    printf '.ref\n' >"$ctx/.containerignore"
done
printf 'FROM scratch\nCOPY . /var/www/moodle\n' >"$OUT/Containerfile.core"
# shellcheck disable=SC2016  # ${CLIENT} is for buildah
printf 'FROM localhost/moodle-4.5\nARG CLIENT\nCOPY ${CLIENT} /var/www/moodle/theme/${CLIENT}\n' >"$OUT/Containerfile.c45"
# shellcheck disable=SC2016
printf 'FROM localhost/moodle-5.1\nARG CLIENT\nCOPY ${CLIENT} /var/www/moodle/public/theme/${CLIENT}\n' >"$OUT/Containerfile.c51"

ensure_imgbuild
ensure_buildah
if [[ $IMGBUILD_OK == 1 ]]; then
    # As a project does: the sources' commits pinned in images.lock (beside the
    # yaml); the minor release names another tag, which the build resolves then.
    rm -f "$WORK/images.lock"
    IMGBUILD_HOME=$OUT/lock-home "$IMGBUILD" -f "$YAML" lock >"$OUT/lock.log" 2>&1 ||
        warn "imgbuild lock failed: $(tail -n 3 "$OUT/lock.log")"
    rm -rf --one-file-system "$OUT/lock-home"
fi

# --- registries -------------------------------------------------------------------------
declare -A REG_PID=() REG_PORT=()
reg_start() {
    local name=$1 dir=$OUT/reg-$1 i
    [[ -n ${REG_PID[$name]:-} ]] && reg_stop "$name"
    reset_dir "$dir"
    mkdir -p "$dir"
    python3 "$REG" serve "$dir" >"$OUT/reg-$name.log" 2>&1 &
    REG_PID[$name]=$!
    for ((i = 0; i < 300; i++)); do
        [[ -s $dir/state.json ]] && break
        kill -0 "${REG_PID[$name]}" 2>/dev/null || {
            warn "registry $name did not start: $(tail -n 20 "$OUT/reg-$name.log")"
            exit 1
        }
        sleep 0.1
    done
    REG_PORT[$name]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$dir/state.json")
}
reg_stop() {
    kill "${REG_PID[$1]}" 2>/dev/null || true
    wait "${REG_PID[$1]}" 2>/dev/null || true
    unset -v 'REG_PID[$1]'
}
stop_all() {
    local name
    for name in "${!REG_PID[@]}"; do kill "${REG_PID[$name]}" 2>/dev/null || true; done
    [[ -f $OUT/config.php.orig ]] && cp -p "$OUT/config.php.orig" "$WORK/clients/$change_name/config.php"
    return 0
}
trap stop_all EXIT
log_lines() { wc -l <"$OUT/reg-$1/registry.log"; }

home=$OUT/imgbuild-home
store=$OUT/buildah-store
img() { printf 'IMGBUILD_HOME=%s %s -f %s' "$(q "$1")" "$(q "$IMGBUILD")" "$(q "$YAML")"; }

# buildah: a script per job, so that measure.py times one command.
bah=$(bah_cmd "$store")
bud="$bah bud --isolation chroot --layers=false --pull=never --format oci -q"
bah_push() { printf '%s push -q --tls-verify=false %s docker://127.0.0.1:$PORT/buildah/%s:latest' "$bah" "$1" "$1"; }
{
    echo "set -e"
    echo "$bud -f $(q "$OUT/Containerfile.core") -t moodle-4.5 $(q "$OUT/ctx-45") >/dev/null"
    echo "$(bah_push moodle-4.5)"
    echo "$bud -f $(q "$OUT/Containerfile.core") -t moodle-5.1 $(q "$OUT/ctx-51") >/dev/null"
    echo "$(bah_push moodle-5.1)"
    for n in "${c45[@]}"; do
        echo "$bud --build-arg CLIENT=$n -f $(q "$OUT/Containerfile.c45") -t $n $(q "$WORK/clients") >/dev/null"
        echo "$(bah_push "$n")"
    done
    for n in "${c51[@]}"; do
        echo "$bud --build-arg CLIENT=$n -f $(q "$OUT/Containerfile.c51") -t $n $(q "$WORK/clients") >/dev/null"
        echo "$(bah_push "$n")"
    done
} >"$OUT/buildah-full.sh"
cf=$OUT/Containerfile.c45
[[ " ${c51[*]} " == *" $change_name "* ]] && cf=$OUT/Containerfile.c51
{
    echo "set -e"
    echo "$bud --build-arg CLIENT=$change_name -f $(q "$cf") -t $change_name $(q "$WORK/clients") >/dev/null"
    echo "$(bah_push "$change_name")"
} >"$OUT/buildah-change.sh"

log "warming the page cache"
warm_cache "$WORK/lines-src"
warm_cache "$WORK/clients"
warm_cache "$OUT/ctx-45"
warm_cache "$OUT/ctx-51"

# --- 1. everything from nothing, built and pushed ----------------------------------------
n_images=$((CLIENTS + 2))
rounds=$((FULL_RUNS > BUILDAH_FULL_RUNS ? FULL_RUNS : BUILDAH_FULL_RUNS))
for ((r = 1; r <= rounds; r++)); do
    log "full build and push, round $r/$rounds"
    if [[ $IMGBUILD_OK == 1 ]] && ((r <= FULL_RUNS)); then
        reg_start imgbuild
        measure --name imgbuild-full --out "$OUT/imgbuild-full.json" --append --runs 1 \
            --prepare "rm -rf --one-file-system $(q "$home") && sync" -- \
            "$(img "$home") build --all --push --registry 127.0.0.1:${REG_PORT[imgbuild]}/imgbuild --json >$(q "$OUT/imgbuild-full.stdout")"
        python3 "$REG" verify "$OUT/reg-imgbuild" "$OUT/imgbuild-full.json" --manifests "$n_images" --bytes 1
    fi
    if [[ $BUILDAH_OK == 1 ]] && ((r <= BUILDAH_FULL_RUNS)); then
        reg_start buildah
        measure --name buildah-full --out "$OUT/buildah-full.json" --append --runs 1 \
            --prepare "rm -rf --one-file-system $(q "$store") && sync" -- \
            "PORT=${REG_PORT[buildah]} bash $(q "$OUT/buildah-full.sh")"
        python3 "$REG" verify "$OUT/reg-buildah" "$OUT/buildah-full.json" --manifests "$n_images" --bytes 1
    fi
done

# --- 2. one client changed, rebuilt and pushed (on the last full run's store and registry) --
change_file=$WORK/clients/$change_name/config.php
cp -p "$change_file" "$OUT/config.php.orig"
change_cmd="printf '// bench change %s\n' \"\$(date +%s%N)\" >>$(q "$change_file")"
buildah_ok() { python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("ok") else 1)' "$1" 2>/dev/null; }
rounds=$((CHANGE_RUNS > BUILDAH_CHANGE_RUNS ? CHANGE_RUNS : BUILDAH_CHANGE_RUNS))
for ((r = 1; r <= rounds; r++)); do
    log "one client changed ($change_name), round $r/$rounds"
    if [[ $IMGBUILD_OK == 1 ]] && buildah_ok "$OUT/imgbuild-full.json" && ((r <= CHANGE_RUNS)); then
        measure --name imgbuild-change --out "$OUT/imgbuild-change.json" --append --runs 1 \
            --prepare "$change_cmd" \
            --cleanup "python3 $(q "$BENCH_DIR/results.py") built-layers $(q "$OUT/imgbuild-change.stdout") >>$(q "$OUT/imgbuild-change.built")" -- \
            "$(img "$home") build --all --push --registry 127.0.0.1:${REG_PORT[imgbuild]}/imgbuild --json >$(q "$OUT/imgbuild-change.stdout")"
    fi
    if [[ $BUILDAH_OK == 1 ]] && buildah_ok "$OUT/buildah-full.json" && ((r <= BUILDAH_CHANGE_RUNS)); then
        measure --name buildah-change --out "$OUT/buildah-change.json" --append --runs 1 \
            --prepare "$change_cmd" -- "PORT=${REG_PORT[buildah]} bash $(q "$OUT/buildah-change.sh")"
    fi
done
cp -p "$OUT/config.php.orig" "$change_file"
if [[ -n ${REG_PID[buildah]:-} ]]; then reg_stop buildah; fi
reset_dir "$store"

# --- 3. a minor release of the 4.5 line across its clients -------------------------------
if [[ $IMGBUILD_OK == 1 ]] && buildah_ok "$OUT/imgbuild-full.json"; then
    # The change of config.php is undone: bring the store and registry back to it first.
    bash -c "$(img "$home") build --all --push --registry 127.0.0.1:${REG_PORT[imgbuild]}/imgbuild --json" >/dev/null
    for ((k = 1; k <= MINOR_RUNS; k++)); do
        rel=4.5.$((8 + k))
        set_ref="--set moodle_45_ref=v$rel"
        log "minor release $rel across ${#c45[@]} clients, round $k/$MINOR_RUNS"
        bash -c "$(img "$home") $set_ref plan --all" >"$OUT/minor-plan-$k.txt" 2>&1 || true
        bash -c "$(img "$home") $set_ref --json plan --all" >"$OUT/minor-plan-$k.json" 2>/dev/null || true
        python3 "$LINES" plan "$OUT/minor-plan-$k.json" --core moodle-4.5 --clients "${c45[@]}" \
            >>"$OUT/minor-plan.jsonl" || echo '{"error": "no plan"}' >>"$OUT/minor-plan.jsonl"
        # The peer: the new core alone, on a copy of the same store (not timed: the copy).
        rm -rf --one-file-system "$OUT/peer-home"
        cp -a "$home" "$OUT/peer-home"
        sync
        measure --name imgbuild-core-alone --out "$OUT/imgbuild-core-alone.json" --append --runs 1 -- \
            "$(img "$OUT/peer-home") $set_ref build moodle-4.5 --json >$(q "$OUT/core-alone.stdout")"
        rm -rf --one-file-system "$OUT/peer-home"
        sync
        since=$(log_lines imgbuild)
        measure --name imgbuild-minor --out "$OUT/imgbuild-minor.json" --append --runs 1 -- \
            "$(img "$home") $set_ref build --all --push --registry 127.0.0.1:${REG_PORT[imgbuild]}/imgbuild --json >$(q "$OUT/imgbuild-minor.stdout")"
        python3 - "$OUT/imgbuild-minor.stdout" "${c45[@]}" >>"$OUT/minor-built.jsonl" <<'EOF'
import json, sys
try:
    rep = json.load(open(sys.argv[1]))
    clients = set(sys.argv[2:])
    built = {i["name"]: sum(1 for l in i["layers"] if l["built"]) for i in rep["images"]}
    print(json.dumps({"core_layers_built": built.get("moodle-4.5"),
                      "client_layers_built": sum(v for k, v in built.items() if k in clients),
                      "clients_assembled": sum(1 for i in rep["images"] if i["name"] in clients and i["assembled"]),
                      "other_layers_built": sum(v for k, v in built.items() if k not in clients and k != "moodle-4.5")}))
except (OSError, ValueError, KeyError) as e:
    print(json.dumps({"error": f"no build --json: {e}"}))
EOF
        python3 "$LINES" uploads "$OUT/reg-imgbuild" --since "$since" --prefix imgbuild --core moodle-4.5 \
            --clients "${c45[@]}" >>"$OUT/minor-uploads.jsonl" || echo '{"error": "registry not read"}' >>"$OUT/minor-uploads.jsonl"
    done
fi
if [[ -n ${REG_PID[imgbuild]:-} ]]; then reg_stop imgbuild; fi

# --- 4. the web image of real fleet clients: docker run -d to the first 200 --------------
if [[ ${SKIP_WEB:-0} == 1 ]]; then
    warn "web: skipped (SKIP_WEB=1)"
elif [[ $IMGBUILD_OK != 1 ]] || ! docker info >/dev/null 2>&1; then
    warn "web: no imgbuild or no Docker engine; its rows are n/a"
else
    for line in 4.5 5.1; do
        [[ -d $REPO_DIR/upstream/moodle-$line ]] || "$REPO_DIR/ci/standin-moodle" "$REPO_DIR/upstream/moodle-$line" "$line"
    done
    web_home=$WORK/web-home # kept: the Debian packages and the bases are the slow part
    log "web: building client-initech (4.5, Apache) and client-acme (5.1, nginx) from $REPO_DIR/images.yaml (not timed)"
    if (cd "$REPO_DIR" && IMGBUILD_HOME=$web_home "$IMGBUILD" build client-initech client-acme \
        -o "docker-archive:$OUT/web.tar") >"$OUT/web-build.log" 2>&1 &&
        python3 "$LINES" retag "$OUT/web.tar" imgbuild-bench && docker load -i "$OUT/web.tar" >>"$OUT/web-build.log"; then
        rm -f "$OUT/web.tar"
        env=(-e MOODLE_WWWROOT=http://localhost -e MOODLE_DB_HOST=db.invalid -e MOODLE_DB_NAME=moodle
            -e MOODLE_DB_USER=moodle -e MOODLE_DB_PASSWORD=secret)
        for ((r = 1; r <= WEB_RUNS; r++)); do
            for c in initech acme; do
                port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
                cid=$(python3 "$LINES" first200 --url "http://127.0.0.1:$port/_health/live" --image "client-$c" \
                    --kind web --append "$OUT/web.jsonl" -- \
                    docker run -d "${env[@]}" -p "127.0.0.1:$port:80" "imgbuild-bench/client-$c:latest")
                [[ -n $cid ]] && docker rm -f -v "$cid" >/dev/null
                # The peer: PHP's built-in server in the same image, no entrypoint.
                port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
                cid=$(python3 "$LINES" first200 --url "http://127.0.0.1:$port/live.php" --image "client-$c" \
                    --kind php-s --append "$OUT/web.jsonl" -- \
                    docker run -d -p "127.0.0.1:$port:80" --entrypoint php "imgbuild-bench/client-$c:latest" \
                    -S 0.0.0.0:80 -t /usr/local/share/moodle/health)
                [[ -n $cid ]] && docker rm -f -v "$cid" >/dev/null
            done
        done
        docker rmi imgbuild-bench/client-initech:latest imgbuild-bench/client-acme:latest \
            imgbuild-bench/client-initech:4.5.8 imgbuild-bench/client-acme:5.1.3 >/dev/null 2>&1 || true
    else
        warn "web: the build failed: $(tail -n 5 "$OUT/web-build.log")"
        rm -f "$OUT/web.tar"
    fi
fi

python3 "$BENCH_DIR/report.py" lines "$WORK" "$(versions_json)"
