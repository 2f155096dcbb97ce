# shellcheck shell=bash
# shellcheck disable=SC2034  # variables set here are read by the scripts that source this
# Shared helpers for bench/core.sh, bench/fleet.sh and bench/push.sh. Source it; do not run it.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
WORK=${BENCH_WORK:-$BENCH_DIR/work}

# Tree parameters (the Moodle core tree is shared by core.sh and fleet.sh).
SEED=${SEED:-1}
FILES=${FILES:-29700}
MIB=${MIB:-290}
# imgbuild binary; built with `cargo build --release` when missing unless IMGBUILD_NO_BUILD=1.
IMGBUILD_DEFAULT=$REPO_DIR/target/release/imgbuild
IMGBUILD=${IMGBUILD:-$IMGBUILD_DEFAULT}
# buildah storage driver: vfs is what works unprivileged everywhere (a CI job).
BUILDAH_DRIVER=${BUILDAH_DRIVER:-vfs}
export BUILDAH_ISOLATION=chroot

# When this run started (UTC), for the report.
BENCH_STARTED=${BENCH_STARTED:-$(date -u '+%Y-%m-%d %H:%M UTC')}
export BENCH_STARTED
# The commit checked out when this run started (the binary is copied then too).
BENCH_GIT_REV=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }

# q ARG...: shell-quote for a command string that measure.py hands to bash -c.
q() { printf '%q' "$1"; }

measure() { python3 "$BENCH_DIR/measure.py" "$@"; }

# fresh_caches DIR...: once the disks are idle, the kernel's caches emptied (as root),
# then each DIR read back into the page cache, so that every timed run starts from the
# same kernel state. The disks first: deleting the last run's gigabytes goes on after
# `sync` returns, and would slow the next run (waits 90 s at most, for 3 s idle).
# Why: a build makes and deletes millions of files; their dentries stay cached, and
# on a kernel with a small dentry hash (this machine boots with dhash_entries=131072)
# every path lookup then walks long hash chains. Measured here: the same cold fleet
# build took 89 s (70 s of system time) after a drop, 93-126 s (88-124 s of system
# time) without, the later runs the slower. Not root: the caches stay, said once.
DROP_WARNED=0
fresh_caches() {
    local d last now quiet=0 i
    sync
    last=$(awk '{s += $4 + $8} END {print s}' /proc/diskstats)
    for ((i = 0; i < 90 && quiet < 3; i++)); do
        sleep 1
        now=$(awk '{s += $4 + $8} END {print s}' /proc/diskstats)
        if ((now - last < 20)); then quiet=$((quiet + 1)); else quiet=0; fi
        last=$now
    done
    if [[ -w /proc/sys/vm/drop_caches ]]; then
        echo 3 >/proc/sys/vm/drop_caches
    elif ((DROP_WARNED == 0)); then
        warn "not root: the kernel's caches are kept between runs, which drift slower as dentries pile up"
        DROP_WARNED=1
    fi
    for d; do tar -cf - -C "$d" . 2>/dev/null | cat >/dev/null; done
    log "dentries cached: $(cut -f1 /proc/sys/fs/dentry-state)"
}

# ensure_moodle_tree: generate $WORK/moodle-tree unless it is there with the same parameters.
ensure_moodle_tree() {
    local tree=$WORK/moodle-tree stamp=$WORK/moodle-tree.stats.json want
    want="seed=$SEED files=$FILES mib=$MIB"
    if [[ -d $tree && -f $stamp && -f $WORK/moodle-tree.params && $(<"$WORK/moodle-tree.params") == "$want" ]]; then
        log "tree: $tree is there ($want)"
        return
    fi
    log "tree: generating $tree ($want)"
    rm -rf --one-file-system "$tree" "$stamp" "$WORK/moodle-tree.params"
    python3 "$BENCH_DIR/gen-moodle-tree.py" "$tree" --seed "$SEED" --files "$FILES" --mib "$MIB" --stats "$stamp"
    printf '%s\n' "$want" >"$WORK/moodle-tree.params"
}

# ensure_clients N: generate the client trees $WORK/clients/client-01..client-NN that
# are missing (as fleet.sh does: seed NN, name clientNN) and set CLIENT_NAMES to them.
ensure_clients() {
    local i n
    CLIENT_NAMES=()
    for ((i = 1; i <= $1; i++)); do CLIENT_NAMES+=("$(printf 'client-%02d' "$i")"); done
    for n in "${CLIENT_NAMES[@]}"; do
        if [[ ! -f $WORK/clients/$n.stats.json ]]; then
            rm -rf --one-file-system "${WORK:?}/clients/$n"
            python3 "$BENCH_DIR/gen-client-tree.py" "$WORK/clients/$n" --seed "$((10#${n#client-}))" \
                --name "${n//-/}" --stats "$WORK/clients/$n.stats.json" --quiet
        fi
    done
    log "clients: ${#CLIENT_NAMES[@]} trees under $WORK/clients"
}

# warm_cache DIR: read a tree once so every tool starts from a warm page cache.
warm_cache() { tar -cf - -C "$1" . >/dev/null; }

# reset_dir DIR: remove a store between runs; sync so that the deletion's I/O
# (discards, journal) is not billed to the next timed run.
reset_dir() { rm -rf --one-file-system "$1"; sync; }

# ensure_imgbuild: sets IMGBUILD_OK=1 when $IMGBUILD exists and runs.
ensure_imgbuild() {
    IMGBUILD_OK=0
    if [[ ! -x $IMGBUILD && $IMGBUILD == "$IMGBUILD_DEFAULT" && ${IMGBUILD_NO_BUILD:-0} != 1 && -f $REPO_DIR/Cargo.toml ]]; then
        log "imgbuild: $IMGBUILD missing; cargo build --release"
        if ! (cd "$REPO_DIR" && cargo build --release --quiet) >&2; then
            warn "cargo build --release failed; imgbuild is skipped"
        fi
    fi
    if [[ ! -x $IMGBUILD ]]; then
        warn "imgbuild: no binary at $IMGBUILD; its rows are n/a"
        return 0
    fi
    if ! "$IMGBUILD" --help 2>&1 | grep -qw build; then
        warn "imgbuild: $IMGBUILD --help names no 'build' command (not implemented yet?); its rows are n/a"
        return 0
    fi
    # Measure a copy: target/release may be rebuilt by someone else during the run.
    mkdir -p "$WORK/bin"
    cp -f "$IMGBUILD" "$WORK/bin/imgbuild"
    log "imgbuild: $("$IMGBUILD" --version 2>&1 | head -n 1), copied to $WORK/bin/imgbuild for this run"
    IMGBUILD=$WORK/bin/imgbuild
    IMGBUILD_OK=1
}

# check_real_build RESULT_JSON STDOUT_FILE DIR MIN_BYTES: keep a measured imgbuild
# result only if the last run printed JSON on stdout and DIR (its IMGBUILD_HOME)
# holds at least MIN_BYTES; otherwise mark the result failed, saying why. This
# keeps a stub binary that exits 0 at once from being reported as fast.
check_real_build() {
    python3 - "$@" <<'EOF'
import json, os, sys
res_path, out_path, home, min_bytes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
try:
    res = json.load(open(res_path))
except (OSError, ValueError):
    sys.exit(0)
if not res.get("ok"):
    sys.exit(0)
why = None
try:
    text = open(out_path).read()
    if not text.strip():
        raise ValueError("empty")
    try:
        json.loads(text)
    except ValueError:  # JSON lines are fine too
        for line in text.splitlines():
            if line.strip():
                json.loads(line)
except (OSError, ValueError) as e:
    why = f"no JSON on stdout ({e})"
size = 0
for d, _, files in os.walk(home):
    for f in files:
        try:
            size += os.lstat(os.path.join(d, f)).st_size
        except OSError:
            pass
if why is None and min_bytes and size < min_bytes:
    why = f"IMGBUILD_HOME holds {size} bytes, less than {min_bytes}: no layer was written?"
if why:
    res.update(ok=False, error=why)
    json.dump(res, open(res_path, "w"), indent=2)
    print(f"warning: {res['name']}: not counted: {why}", file=sys.stderr)
EOF
}

# bah_cmd STORE: the buildah prefix, as a string for measure.py.
bah_cmd() {
    printf 'buildah --storage-driver %s --root %s --runroot %s' \
        "$(q "$BUILDAH_DRIVER")" "$(q "$1/root")" "$(q "$1/run")"
}

# ensure_buildah: sets BUILDAH_OK=1 when buildah is usable.
ensure_buildah() {
    BUILDAH_OK=0
    if [[ ${SKIP_BUILDAH:-0} == 1 ]]; then
        warn "buildah: skipped (SKIP_BUILDAH=1)"
        return 0
    fi
    if ! command -v buildah >/dev/null; then
        warn "buildah: not installed; its rows are n/a (apt-get install buildah)"
        return 0
    fi
    BUILDAH_OK=1
}

versions_json() {
    python3 - "$IMGBUILD" "$BENCH_GIT_REV" <<'EOF'
import json, os, subprocess, sys
def out(*cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0] if r.returncode == 0 else None
    except Exception:
        return None
img = sys.argv[1]
rev = sys.argv[2]
print(json.dumps({
    "imgbuild": out(img, "--version") if os.access(img, os.X_OK) else None,
    "git_rev": rev,
    "buildah": out("buildah", "--version"),
    "pigz": out("pigz", "--version"),
    "skopeo": out("skopeo", "--version"),
    "docker_registry": out("docker-registry", "--version"),
    "tar": out("tar", "--version"),
    "kernel": os.uname().release,
    "nproc": os.cpu_count(),
    "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
}))
EOF
}

# write_fleet_yaml FILE WRITER: the Moodle core (moodle-tree, from scratch) and one
# image per CLIENT_NAMES entry on it, each adding its client tree as a theme.
write_fleet_yaml() {
    {
        echo "# Written by $2: Moodle core plus ${#CLIENT_NAMES[@]} clients."
        echo "images:"
        echo "  moodle:"
        echo "    from: scratch"
        echo "    layers:"
        echo "      - {src: moodle-tree, dest: /var/www/moodle}"
        for n in "${CLIENT_NAMES[@]}"; do
            echo "  $n:"
            echo "    from: moodle"
            echo "    layers:"
            echo "      - {src: clients/$n, dest: /var/www/moodle/theme/$n}"
        done
    } >"$1"
}

# --- supply.sh and supply-fleet.sh: fresh registries, arms taking turns ---------------
declare -A EVIDENCE_REG_PID=()
# reg_start NAME: a fresh registry.py registry (and its counting proxy) in
# $OUT/reg-NAME; sets PORT and PROXY. reg_stop NAME stops it and drops its storage.
reg_start() {
    local dir=$OUT/reg-$1 i
    reset_dir "$dir"
    mkdir -p "$dir"
    python3 "$BENCH_DIR/registry.py" serve "$dir" >"$OUT/reg-$1.log" 2>&1 &
    EVIDENCE_REG_PID[$1]=$!
    for ((i = 0; i < 300; i++)); do
        [[ -s $dir/state.json ]] && break
        sleep 0.1
    done
    read -r PORT PROXY < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["port"], s["proxy_port"])' "$dir/state.json")
}
reg_stop() {
    kill "${EVIDENCE_REG_PID[$1]}" 2>/dev/null || true
    wait "${EVIDENCE_REG_PID[$1]}" 2>/dev/null || true
    reset_dir "$OUT/reg-$1/storage"
}
reg_stop_all() { for p in "${EVIDENCE_REG_PID[@]}"; do kill "$p" 2>/dev/null || true; done; }
# order R: the arms of round R, taking turns at going first: a run right after
# another one's gigabytes were deleted is slower (measured: 83 s first, 90 s
# second, the same flags), and always second would bill that to one arm.
order() { if (($1 % 2)); then echo plain evidence; else echo evidence plain; fi; }
