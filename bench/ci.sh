#!/usr/bin/env bash
# ci.sh: change impact and GitLab child pipelines on a generated fleet repository:
# CLIENTS (500) clients on two Moodle lines (bookworm/PHP 8.2/Apache and
# trixie/PHP 8.4/nginx, Debian packages pinned in images.lock, each core a `dir:`
# source of CORE_FILES files committed in the repository), in a git history of
# three commits: the fleet, a Debian security update of trixie's base (images.lock),
# one client's config.php. Timed: `plan --changed-since` over one and over both
# commits, `ci gitlab` over both and for every image; against `git diff --name-only`
# (the floor: what git itself takes to say which files changed) and `imgbuild graph`
# (one load of the graph). Targets: each imgbuild row ≤ 1 s and ≤ 100 MiB peak RSS.
# A report, not a test: always exits 0 once it has measured.
#
# Environment: CLIENTS (500), CORE_FILES (3000), RUNS (5), IMGBUILD,
# IMGBUILD_NO_BUILD=1, BENCH_WORK (bench/work).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS=${CLIENTS:-500}
CORE_FILES=${CORE_FILES:-3000}
RUNS=${RUNS:-5}
OUT=$WORK/ci
REPO=$WORK/ci-fleet
mkdir -p "$WORK" "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.stderr

ensure_imgbuild
if [[ $IMGBUILD_OK != 1 ]]; then
    warn "no imgbuild: nothing to measure"
    exit 0
fi

# --- the fleet repository ---------------------------------------------------------
log "fleet: $CLIENTS clients, two lines, cores of $CORE_FILES files, in $REPO"
rm -rf --one-file-system "$REPO"
python3 - "$REPO" "$CLIENTS" "$CORE_FILES" <<'EOF'
import json, os, sys
repo, clients, core_files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def w(rel, text):
    p = os.path.join(repo, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(text)
w("images.yaml", """# Written by bench/ci.sh.
vars:
  timezone: Europe/Zurich
sources:
  moodle-45: {dir: upstream/moodle-4.5}
  moodle-51: {dir: upstream/moodle-5.1}
images:
  base-bookworm:
    from: scratch
    debian: {suite: bookworm, variant: minbase, packages: [systemd, exim4-daemon-light, tzdata]}
    layers: [layers/base]
    config: {env: {TZ: "${timezone}"}}
  base-trixie:
    from: scratch
    debian: {suite: trixie, variant: minbase, packages: [systemd, exim4-daemon-light, tzdata]}
    layers: [layers/base]
    config: {env: {TZ: "${timezone}"}}
  php82-apache:
    from: base-bookworm
    debian: {packages: [apache2, libapache2-mod-php8.2]}
    layers: [layers/apache]
  php84-nginx:
    from: base-trixie
    debian: {packages: [nginx, php8.4-fpm]}
    layers: [layers/nginx]
  moodle-4.5:
    from: php82-apache
    vars: {moodle_release: "${source.moodle-45.release}"}
    layers: [{source: moodle-45, dest: /var/www/moodle}]
  moodle-5.1:
    from: php84-nginx
    vars: {moodle_release: "${source.moodle-51.release}"}
    layers: [{source: moodle-51, dest: /var/www/moodle}]
clients:
  files: clients/*/client.yaml
  image: client-${client}
  template:
    from: moodle-${line}
    layers:
      - {src: "clients/${client}/theme", dest: "/var/www/moodle/theme/${client}"}
      - {src: "clients/${client}/config.php", dest: /etc/moodle/config.d/50-client.php}
    tags: ["client-${client}:${moodle_release}"]
""")
for d in ("base", "apache", "nginx"):
    w(f"layers/{d}/etc/{d}.conf", f"# {d}\n")
for line, release in (("4.5", "4.5.7"), ("5.1", "5.1.3")):
    w(f"upstream/moodle-{line}/version.php", f"<?php\n$release = '{release} (Build: 20251006)';\n$branch = '{line.replace('.', '0')}';\n")
    for i in range(core_files):
        w(f"upstream/moodle-{line}/mod/m{i % 50}/lib{i}.php", f"<?php // {line} {i}\n")
for i in range(1, clients + 1):
    n = f"c{i:03d}"
    w(f"clients/{n}/client.yaml", f"vars: {{line: \"{'4.5' if i % 2 else '5.1'}\"}}\n")
    w(f"clients/{n}/config.php", f"<?php // {n}\n")
    for f in ("config.php", "lib.php", "lang/en/theme.php", "scss/pre.scss", "scss/post.scss"):
        w(f"clients/{n}/theme/{f}", f"/* {n} {f} */\n")
def image(suite, count, version):
    return {"inputs": "0", "suite": suite, "codename": suite, "architecture": "amd64",
            "release_date": "Sat, 08 Nov 2025 09:00:00 UTC", "epoch": 1762592400,
            "packages": [{"name": f"pkg{k:03d}" if k else "tzdata", "version": version if k == 0 else "1.0-1",
                          "architecture": "amd64", "path": f"pool/main/p/pkg{k}/pkg{k}_1.0-1_amd64.deb",
                          "base": "http://deb.debian.org/debian", "sha256": "0" * 64, "size": 1000}
                         for k in range(count)]}
def lock(trixie_tz):
    return {"lock_version": 1, "inputs": "0", "images": {
        "base-bookworm": image("bookworm", 150, "2025b-0+deb12u1"),
        "base-trixie": image("trixie", 150, trixie_tz),
        "php82-apache": image("bookworm", 60, "x"),
        "php84-nginx": image("trixie", 60, "x")}}
w("images.lock", json.dumps(lock("2025b-4"), indent=2) + "\n")
w(".lock-next", json.dumps(lock("2025b-4+deb13u1"), indent=2) + "\n")
EOF
g() { git -C "$REPO" -c user.name=bench -c user.email=bench@example.org "$@"; }
mv "$REPO/.lock-next" "$WORK/ci-lock-next"
g init -q -b main
g add -A && g commit -q -m fleet
cp "$WORK/ci-lock-next" "$REPO/images.lock" && g commit -q -am "security update: tzdata"
echo "// changed" >>"$REPO/clients/c017/config.php" && g commit -q -am "c017: config"
files=$(g ls-files | wc -l)
log "fleet: $files files in git, 3 commits"

# --- measured ----------------------------------------------------------------------
I=$(q "$IMGBUILD")
R=$(q "$REPO")
run() { measure --name "$1" --out "$OUT/$2.json" --runs "$RUNS" --warmup 1 -- "$3"; }
export IMGBUILD_HOME=$WORK/ci-home
run "git diff --name-only HEAD~2" git-diff "git -C $R diff --name-only HEAD~2 >/dev/null"
run "imgbuild graph (one load)" graph "cd $R && $I graph --format json >/dev/null"
run "plan --changed-since HEAD~1 (one client)" plan-one "cd $R && $I plan --changed-since HEAD~1 --json >/dev/null"
run "plan --changed-since HEAD~2 (a line)" plan-line "cd $R && $I plan --changed-since HEAD~2 --json >/dev/null"
run "ci gitlab --changed-since HEAD~2" ci-line "cd $R && $I ci gitlab --changed-since HEAD~2 -q -o $(q "$OUT/line.yml")"
run "ci gitlab --all" ci-all "cd $R && $I ci gitlab --all -q -o $(q "$OUT/all.yml")"

# --- report ------------------------------------------------------------------------
(cd "$REPO" && "$IMGBUILD" plan --changed-since HEAD~1 --json) >"$OUT/plan-one.out"
(cd "$REPO" && "$IMGBUILD" plan --changed-since HEAD~2 --json) >"$OUT/plan-line.out"
python3 - "$OUT" "$CLIENTS" "$files" <<'EOF'
import json, os, sys
out, clients, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(n):
    try:
        return json.load(open(f"{out}/{n}.json"))
    except OSError:
        return None
def count(n):
    try:
        return len(json.load(open(f"{out}/{n}.out"))["images"])
    except (OSError, ValueError, KeyError):
        return None
def jobs(n):
    try:
        return sum(1 for l in open(f"{out}/{n}.yml") if l.startswith("build ") or l.startswith('"build '))
    except OSError:
        return None
floor = load("git-diff")
rows = [("git-diff", None), ("graph", None), ("plan-one", count("plan-one")), ("plan-line", count("plan-line")),
        ("ci-line", jobs("line")), ("ci-all", jobs("all"))]
print(f"\nci.sh: {clients} clients on two lines, {files} files in git; {os.environ.get('BENCH_STARTED', '')}")
print(f"| row | images / jobs | wall (mean ± sd) | × git diff | peak RSS | ≤ 1 s and ≤ 100 MiB |")
print("|---|---|---|---|---|---|")
for key, n in rows:
    r = load(key)
    if not r or not r.get("ok"):
        print(f"| {key} | n/a | failed | n/a | n/a | n/a |")
        continue
    ratio = "n/a" if not floor or not floor.get("ok") else f"{r['mean_s'] / floor['mean_s']:.1f}"
    rss = r.get("max_rss_mib")
    rss_s = "n/a" if rss is None else f"{rss:.0f} MiB"
    met = "—" if key in ("git-diff", "graph") else ("n/a" if rss is None else ("yes" if r["max_s"] <= 1 and rss <= 100 else "no"))
    print(f"| {r['name']} | {'' if n is None else n} | {r['mean_s']:.3f} ± {r['stddev_s']:.3f} s | {ratio} | {rss_s} | {met} |")
EOF
