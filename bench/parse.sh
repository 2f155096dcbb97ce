#!/usr/bin/env bash
# parse.sh: parsing and graph work at scale (issue 13, item 6). Generates
#   - vars:  a 10 MB images.yaml of ~196,000 vars with one error (a var given
#            twice), timed by `check`;
#   - chain: 5,000 images, each `from:` the one before;
#   - flat:  5,000 images, each from scratch;
#   - shared: 5,000 images with a var of their own over 20,000 file vars
#            (images × vars when each image copied the file's vars), by `check`;
# each image of chain and flat one file layer of one tiny file. For chain
# and flat it times `check`, `plan --all` and a no-change `build --all` (after
# a first build, timed too but with no target) with the release binary, and
# prints each figure against the 2 s target. A figure not measured (a
# command failed or timed out) prints n/a, never a pass. A report, not a
# test: it exits 0 once it has measured.
#
# Environment: IMGBUILD (target/release/imgbuild, built when missing unless
# IMGBUILD_NO_BUILD=1), BENCH_WORK (bench/work), VARS (196000), IMAGES
# (5000), TIMEOUT (600 s per command), TARGET (2 s).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VARS=${VARS:-196000}
IMAGES=${IMAGES:-5000}
TIMEOUT=${TIMEOUT:-600}
TARGET=${TARGET:-2}
OUT=$WORK/parse
rm -rf "$OUT"
mkdir -p "$OUT"
export IMGBUILD_HOME=$OUT/home

if [[ ! -x $IMGBUILD ]]; then
    [[ ${IMGBUILD_NO_BUILD:-} == 1 ]] && { warn "no $IMGBUILD"; exit 1; }
    log "building $IMGBUILD"
    cargo build --release --manifest-path "$REPO_DIR/Cargo.toml" >&2
fi

log "generating in $OUT"
python3 - "$OUT" "$VARS" "$IMAGES" <<'PY'
import os, sys
out, nvars, nimages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# vars: ~51 bytes a line, so 196,000 vars are 10 MB; v7 given twice.
d = os.path.join(out, "vars"); os.makedirs(d)
with open(os.path.join(d, "images.yaml"), "w") as f:
    f.write("vars:\n")
    for i in range(nvars):
        f.write(f"  v{i}: \"value-{i:07d}-{'x' * 24}\"\n")
    f.write("  v7: again\n")
    f.write("images:\n  a:\n    from: scratch\n    tags: [\"a:${v%d}\"]\n" % (nvars - 1))
d = os.path.join(out, "shared"); os.makedirs(d)
with open(os.path.join(d, "images.yaml"), "w") as f:
    f.write("vars:\n")
    for i in range(20000):
        f.write(f"  v{i}: \"x{i}\"\n")
    f.write("images:\n")
    for i in range(nimages):
        f.write(f"  i{i}: {{from: scratch, vars: {{own: \"${{v{i}}}\"}}, tags: [\"i{i}:${{own}}\"]}}\n")
for shape in ("chain", "flat"):
    d = os.path.join(out, shape); os.makedirs(os.path.join(d, "files"))
    with open(os.path.join(d, "images.yaml"), "w") as f:
        f.write("images:\n")
        for i in range(nimages):
            parent = "scratch" if shape == "flat" or i == 0 else f"i{i - 1}"
            f.write(f"  i{i}:\n    from: {parent}\n    layers: [{{src: files/f{i}.txt, dest: /f{i}.txt}}]\n")
    for i in range(nimages):
        with open(os.path.join(d, "files", f"f{i}.txt"), "w") as g:
            g.write(f"{i}\n")
PY
log "vars: $(du -h "$OUT/vars/images.yaml" | cut -f1) images.yaml"

# timed NAME EXPECT DIR ARGS...: runs imgbuild in DIR, prints the time, or
# n/a when its exit status is not EXPECT (or it timed out).
timed() {
    local name=$1 expect=$2 dir=$3 start end code secs verdict base
    shift 3
    base=$OUT/$(printf '%s' "$name" | tr -c 'a-z0-9-' '_')
    start=$(date +%s.%N)
    code=0
    (cd "$dir" && timeout "$TIMEOUT" "$IMGBUILD" -q "$@") >"$base.stdout" 2>"$base.stderr" || code=$?
    end=$(date +%s.%N)
    if [[ $code != "$expect" ]]; then
        printf '%-28s %10s   (exit %s, expected %s; see %s)\n' "$name" n/a "$code" "$expect" "$base.stderr"
        return 1
    fi
    secs=$(python3 -c "print(f'{$end - $start:.2f}')")
    if [[ $name == *"first build"* ]]; then
        verdict="(no target)"
    elif python3 -c "import sys; sys.exit(0 if $secs <= $TARGET else 1)"; then
        verdict="within ${TARGET} s"
    else
        verdict="OVER ${TARGET} s"
    fi
    printf '%-28s %8s s   %s\n' "$name" "$secs" "$verdict"
}

printf '\nimgbuild %s (%s), %s vars, %s images; target %s s each\n\n' \
    "$BENCH_GIT_REV" "$IMGBUILD" "$VARS" "$IMAGES" "$TARGET"
if timed "vars: check" 2 "$OUT/vars" check; then
    (cd "$OUT/vars" && "$IMGBUILD" --json check >"$OUT/vars-check.json" 2>/dev/null) || true
    problems=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["problems"]))' "$OUT/vars-check.json" 2>/dev/null || echo n/a)
    printf '%-28s %10s\n' "  problems reported" "$problems (want 1)"
fi
timed "shared: check" 0 "$OUT/shared" check || true
for shape in chain flat; do
    timed "$shape: check" 0 "$OUT/$shape" check || true
    timed "$shape: plan --all" 0 "$OUT/$shape" plan --all || true
    if timed "$shape: first build --all" 0 "$OUT/$shape" build --all; then
        timed "$shape: no-change build --all" 0 "$OUT/$shape" build --all || true
    else
        printf '%-28s %10s   (the first build did not finish)\n' "$shape: no-change build --all" n/a
    fi
done
