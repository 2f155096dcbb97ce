#!/usr/bin/env bash
# cache-start.sh: how soon a CI job whose parents are all in the registry cache starts
# building its own layer (issue 14: within 2 s of starting).
#
# A chain pushed once to a local registry (docker-registry, run by registry.py) with
# `--cache-repo`, as the parents' jobs of a pipeline push it:
#   core   from scratch: the generated Moodle tree (lib.sh's moodle-tree: FILES files, MIB MiB)
#   big    on core: one BIG_MIB MiB file of random bytes (incompressible)
#   child  on big: a client's tree (lib.sh's client-01, ~200 files, ~2 MiB) and a file that
#          differs in every run, so that its layer is never in the cache: it is built
# Then RUNS jobs, each on a fresh, empty IMGBUILD_HOME (a fresh runner):
# `imgbuild --json build child --cache-repo …`, timed from its start to the moment its
# stderr says `child: writing layer 0` (the child's own layer starts), and to its end;
# each run's report must say the parents' layers were fetched from the cache and the
# child's built, else the run does not count. Peers in the same run: the same build on
# a store that already holds the parents (filled by an untimed `build big` from the
# cache: the floor, nothing to fetch), and `skopeo copy` of `big` from the registry to an
# OCI layout (what fetching the parents' bytes costs).
# A report, not a test: always exits 0 once it has measured.
#
# Environment: RUNS (5), BIG_MIB (256), FILES/MIB/SEED (lib.sh), IMGBUILD,
# IMGBUILD_NO_BUILD=1, BENCH_WORK (bench/work).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-5}
BIG_MIB=${BIG_MIB:-256}
OUT=$WORK/cache-start
PROJECT=$OUT/project
REG=$BENCH_DIR/registry.py
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.jsonl "$OUT"/*.stderr "$OUT"/*.stdout

ensure_imgbuild
if [[ $IMGBUILD_OK != 1 ]]; then
    warn "no imgbuild: nothing to measure"
    exit 0
fi
if ! command -v docker-registry >/dev/null; then
    warn "docker-registry is not installed (apt-get install docker-registry): nothing to measure"
    exit 0
fi

# --- the chain --------------------------------------------------------------------
ensure_moodle_tree
ensure_clients 1
rm -rf --one-file-system "$PROJECT"
mkdir -p "$PROJECT/big"
# (The Moodle tree is shared with core.sh and fleet.sh: a link, read with --context.)
ln -s "$WORK/moodle-tree" "$PROJECT/moodle-tree"
cp -a "$WORK/clients/client-01" "$PROJECT/child"
head -c "$((BIG_MIB << 20))" /dev/urandom >"$PROJECT/big/blob.bin"
cat >"$PROJECT/images.yaml" <<'EOF'
# Written by bench/cache-start.sh.
images:
  core:
    from: scratch
    layers:
      - {src: moodle-tree, dest: /var/www/moodle}
  big:
    from: core
    layers:
      - {src: big, dest: /srv/big}
  child:
    from: big
    layers:
      - {src: child, dest: /var/www/moodle/theme/client}
EOF

# --- the registry -----------------------------------------------------------------
reg_dir=$OUT/reg
reset_dir "$reg_dir"
mkdir -p "$reg_dir"
python3 "$REG" serve "$reg_dir" >"$OUT/registry.log" 2>&1 &
reg_pid=$!
# At the end: the registry stopped, its storage and the big file removed (disk is shared).
cleanup() {
    kill "$reg_pid" 2>/dev/null || true
    wait "$reg_pid" 2>/dev/null || true
    rm -rf --one-file-system "$reg_dir/storage" "$PROJECT" "$OUT"/home-*
}
trap cleanup EXIT
for ((i = 0; i < 300; i++)); do
    [[ -s $reg_dir/state.json ]] && break
    if ! kill -0 "$reg_pid" 2>/dev/null; then
        warn "the registry did not start: $(tail -n 20 "$OUT/registry.log")"
        exit 0
    fi
    sleep 0.1
done
port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$reg_dir/state.json")
PREFIX=127.0.0.1:$port/bench
CACHE=$PREFIX/cache

log "chain: core ($FILES files, $MIB MiB) ← big ($BIG_MIB MiB) ← child, pushed to $PREFIX with --cache-repo $CACHE"
export IMGBUILD_HOME=$OUT/home-parents
reset_dir "$IMGBUILD_HOME"
(cd "$PROJECT" && "$IMGBUILD" -q --context "$WORK" build big --push --registry "$PREFIX" --cache-repo "$CACHE") ||
    { warn "pushing the parents failed"; exit 0; }
parents_bytes=$(python3 "$REG" stored "$reg_dir" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("bytes", 0))' 2>/dev/null || echo 0)

# --- measured ---------------------------------------------------------------------
# first-layer.py HOME OUT_JSON -- CMD...: runs CMD with IMGBUILD_HOME=HOME, timing the
# line `child: writing layer 0` on its stderr and its end; appends one JSON line.
cat >"$OUT/first-layer.py" <<'EOF'
import json, os, subprocess, sys, time
home, out, cmd = sys.argv[1], sys.argv[2], sys.argv[4:]
env = dict(os.environ, IMGBUILD_HOME=home)
load = os.getloadavg()[0]
t0 = time.monotonic()
p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
first = None
lines = []
for line in p.stderr:
    lines.append(line)
    if first is None and line.startswith("child: writing layer 0"):
        first = time.monotonic() - t0
stdout = p.stdout.read()
_, status, rusage = os.wait4(p.pid, 0)
end = time.monotonic() - t0
ok = os.waitstatus_to_exitcode(status) == 0
why = None if ok else "exit %d: %s" % (os.waitstatus_to_exitcode(status), "".join(lines[-5:]))
fetched = built = None
if ok:
    try:
        images = {i["name"]: i for i in json.loads(stdout)["images"]}
        fetched = all(l["fetched"] for n in ("core", "big") for l in images[n]["layers"])
        built = all(l["built"] for l in images["child"]["layers"])
    except (ValueError, KeyError, TypeError) as e:
        why = f"no report on stdout ({e})"
with open(out, "a") as f:
    f.write(json.dumps({"first_layer_s": first, "end_s": end, "ok": ok, "why": why,
                        "parents_fetched": fetched, "child_built": built,
                        "max_rss_mib": rusage.ru_maxrss / 1024, "load": load}) + "\n")
EOF
job() { # job NAME HOME: one run of the child's job
    python3 "$OUT/first-layer.py" "$2" "$OUT/$1.jsonl" -- bash -c \
        "cd $(q "$PROJECT") && exec $(q "$IMGBUILD") --json --context $(q "$WORK") build child --cache-repo $(q "$CACHE")" \
        2>>"$OUT/$1.stderr" || true
}
sko_ok=0
command -v skopeo >/dev/null && sko_ok=1
for ((r = 1; r <= RUNS; r++)); do
    log "round $r/$RUNS"
    echo "round $r $(date +%s.%N)" >"$PROJECT/child/round.txt"
    # A fresh runner: nothing in its store.
    home=$OUT/home-fresh
    reset_dir "$home"
    job fresh "$home"
    reset_dir "$home"
    # The floor: the parents in the store already.
    home=$OUT/home-warm
    reset_dir "$home"
    (cd "$PROJECT" && IMGBUILD_HOME=$home "$IMGBUILD" -q --context "$WORK" build big --cache-repo "$CACHE") ||
        warn "filling the warm store failed"
    echo "round $r warm $(date +%s.%N)" >"$PROJECT/child/round.txt"
    job warm "$home"
    reset_dir "$home"
    if [[ $sko_ok == 1 ]]; then
        reset_dir "$OUT/skopeo-oci"
        measure --name "skopeo copy big (the parents' bytes)" --out "$OUT/skopeo.json" --append --runs 1 -- \
            "skopeo copy -q --src-tls-verify=false docker://$PREFIX/big:latest oci:$(q "$OUT/skopeo-oci"):big" >/dev/null
    fi
done
reset_dir "$OUT/skopeo-oci"

# --- report -----------------------------------------------------------------------
python3 - "$OUT" "$RUNS" "$FILES" "$MIB" "$BIG_MIB" "$parents_bytes" <<'EOF'
import json, os, statistics, sys
out, runs, files, mib, big_mib, stored = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
def rows(name):
    try:
        return [json.loads(l) for l in open(f"{out}/{name}.jsonl")]
    except OSError:
        return []
def fmt(v):
    return "n/a" if v is None else f"{v:.2f} s"
print(f"\ncache-start.sh: core ({files} files, {mib} MiB) ← big ({big_mib} MiB random) ← child; "
      f"registry storage {stored / 2**20:.0f} MiB; {os.environ.get('BENCH_STARTED', '')}")
print("| row | runs counted | to the child's layer: mean / slowest | whole job: mean | peak RSS | load (1 min) | ≤ 2 s |")
print("|---|---|---|---|---|---|---|")
floor = None
for name, label in (("fresh", "fresh store, parents in the registry cache"), ("warm", "parents already in the store (floor)")):
    rs = rows(name)
    good = [r for r in rs if r["ok"] and r["first_layer_s"] is not None and r["child_built"] and (name == "warm" or r["parents_fetched"])]
    for r in rs:
        if r not in good:
            print(f"warning: {name}: a run not counted: {r}", file=sys.stderr)
    if not good:
        print(f"| {label} | 0 of {len(rs)} | n/a | n/a | n/a | n/a | n/a |")
        continue
    first = [r["first_layer_s"] for r in good]
    ends = [r["end_s"] for r in good]
    if name == "warm":
        floor = statistics.mean(first)
    loads = [r["load"] for r in good]
    met = "—" if name == "warm" else ("yes" if max(first) <= 2 else "no")
    print(f"| {label} | {len(good)} of {len(rs)} | {statistics.mean(first):.2f} / {max(first):.2f} s | "
          f"{statistics.mean(ends):.2f} s | {max(r['max_rss_mib'] for r in good):.0f} MiB | "
          f"{min(loads):.1f}–{max(loads):.1f} | {met} |")
try:
    s = json.load(open(f"{out}/skopeo.json"))
    if s.get("ok"):
        print(f"| skopeo copy big to an OCI layout (the parents' bytes) | {len(s['runs'])} | — | {s['mean_s']:.2f} s | "
              f"{s.get('max_rss_mib') or 0:.0f} MiB | — | — |")
except (OSError, ValueError, KeyError):
    print("| skopeo copy big | n/a | n/a | n/a | n/a | n/a | n/a |")
EOF
