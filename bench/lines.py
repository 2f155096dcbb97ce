#!/usr/bin/env python3
"""Helpers of bench/lines.sh: the two Moodle cores as git repositories, what the
registry's access log says a push uploaded, what `imgbuild plan` says, and the time
from `docker run -d` to the first HTTP 200.

usage: lines.py sources DIR --files N --mib M --minors K --changed C
           two git repositories DIR/moodle-45 (flat, tags v4.5.8, then one tag per
           minor release v4.5.9 ... : version.php's $release and $version, and C
           files changed) and DIR/moodle-51 (code under public/, tag v5.1.3);
           regenerated only when the parameters change (DIR/params)
       lines.py uploads REGDIR --since LINE --prefix P --core NAME --clients NAME...
           what the registry's access log (from LINE on) says went into the
           clients' repositories, each blob classified by the manifests now in the
           registry: the client's own layers, the core's layers, configs
       lines.py plan PLAN_JSON --core NAME --clients NAME...
           what `imgbuild plan --json` says of the core and of the clients
       lines.py retag ARCHIVE PREFIX
           names the images of a docker-archive PREFIX/NAME:TAG (before `docker load`
           on a shared engine)
       lines.py first200 --url URL --image I --kind K --append FILE [--timeout S] -- CMD...
           runs CMD (`docker run -d ...`), then polls URL until it answers 200;
           adds the seconds from just before CMD to the 200 to FILE as a JSON
           line; prints the container's id
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))

GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.org",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.org",
           "GIT_AUTHOR_DATE": "2025-12-08T00:00:00Z", "GIT_COMMITTER_DATE": "2025-12-08T00:00:00Z"}


def git(repo, *args):
    env = dict(os.environ, **GIT_ENV)
    subprocess.run(["git", "-C", repo, "-c", "init.defaultBranch=main", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def version_php(line, release, version, branch):
    return (f"<?php\n// Moodle {line}'s version.php (bench stand-in).\n"
            "defined('MOODLE_INTERNAL') || die();\n"
            f"$version  = {version};\n$release  = '{release} (Build: 20251208)';\n"
            f"$branch   = '{branch}';\n$maturity = MATURITY_STABLE;\n")


def gen_tree(out, seed, files, mib):
    subprocess.run([sys.executable, os.path.join(HERE, "gen-moodle-tree.py"), out, "--seed", str(seed),
                    "--files", str(files), "--mib", str(mib), "--force", "-q"], check=True,
                   stdout=subprocess.DEVNULL)


def tree_stats(root):
    files = size = 0
    for d, dirs, fs in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".git"]
        for f in fs:
            st = os.lstat(os.path.join(d, f))
            files += 1
            size += st.st_size
    return {"files": files, "bytes": size}


def sources(a):
    want = f"files={a.files} mib={a.mib} minors={a.minors} changed={a.changed} v=1"
    params = os.path.join(a.dir, "params")
    if os.path.exists(params) and open(params).read().strip() == want:
        print(f"sources: {a.dir} is there ({want})", file=sys.stderr)
        return
    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)
    stats = {}
    # 4.5: flat, as Moodle 4.5 is; a tag per release, as MOODLE_405_STABLE has.
    r45 = os.path.join(a.dir, "moodle-45")
    gen_tree(r45, 405, a.files, a.mib)
    with open(os.path.join(r45, "version.php"), "w") as f:
        f.write(version_php("4.5", "4.5.8", "2024100708.00", "405"))
    git(r45, "init", "-q")
    git(r45, "add", "-A")
    git(r45, "commit", "-q", "-m", "Moodle release 4.5.8")
    git(r45, "tag", "-a", "-m", "4.5.8", "v4.5.8")
    stats["moodle-45"] = tree_stats(r45)
    php = sorted(os.path.relpath(os.path.join(d, f), r45)
                 for d, dirs, fs in os.walk(r45) if ".git" not in d.split(os.sep)
                 for f in fs if f.endswith(".php") and f != "version.php")
    # A minor release: version.php and some files across the tree, as a
    # weekly/minor tag of MOODLE_405_STABLE changes them.
    for k in range(1, a.minors + 1):
        rel = f"4.5.{8 + k}"
        with open(os.path.join(r45, "version.php"), "w") as f:
            f.write(version_php("4.5", rel, f"20241007{8 + k:02d}.00", "405"))
        step = max(len(php) // max(a.changed, 1), 1)
        for p in php[k % step::step][:a.changed]:
            with open(os.path.join(r45, p), "a") as f:
                f.write(f"// {rel}: MDL-{80000 + k} fixed here.\n")
        git(r45, "add", "-A")
        git(r45, "commit", "-q", "-m", f"Moodle release {rel}")
        git(r45, "tag", "-a", "-m", rel, f"v{rel}")
    # 5.1: code under public/, version.php beside it, as in Moodle 5.1.
    r51 = os.path.join(a.dir, "moodle-51")
    gen_tree(os.path.join(r51, "public"), 501, a.files, a.mib)
    with open(os.path.join(r51, "version.php"), "w") as f:
        f.write(version_php("5.1", "5.1.3", "2025100603.00", "501"))
    git(r51, "init", "-q")
    git(r51, "add", "-A")
    git(r51, "commit", "-q", "-m", "Moodle release 5.1.3")
    git(r51, "tag", "-a", "-m", "5.1.3", "v5.1.3")
    stats["moodle-51"] = tree_stats(r51)
    stats["changed_per_minor"] = a.changed + 1
    with open(os.path.join(a.dir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
    with open(params, "w") as f:
        f.write(want + "\n")


ACCESS = re.compile(r'\] "(\S+) (\S+) [^"]*" (\d+) ')
MANIFEST_TYPES = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json"])


def manifest(port, repo, ref="latest"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/{repo}/manifests/{ref}",
                                 headers={"Accept": MANIFEST_TYPES})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def uploads(a):
    with open(os.path.join(a.regdir, "state.json")) as f:
        port = json.load(f)["port"]
    # Wait for the registry's last access lines (written after each response).
    path = os.path.join(a.regdir, "registry.log")
    last = -1
    for _ in range(40):
        size = os.path.getsize(path)
        if size == last:
            break
        last = size
        time.sleep(0.1)
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()[a.since:]
    core = manifest(port, f"{a.prefix}/{a.core}")
    core_layers = {d["digest"] for d in core["layers"]}
    kind = {}  # (repo, digest) -> what it is
    for c in a.clients:
        repo = f"{a.prefix}/{c}"
        m = manifest(port, repo)
        kind[(repo, m["config"]["digest"])] = "config"
        for d in m["layers"]:
            kind[(repo, d["digest"])] = "core layer" if d["digest"] in core_layers else "client layer"
    out = {"client_layer_uploads": 0, "core_layer_uploads_into_clients": 0, "config_uploads": 0,
           "other_uploads_into_clients": 0, "mounts_into_clients": 0, "core_repo_uploads": 0,
           "manifest_puts": 0, "requests": 0, "errors": 0, "uploaded": []}
    client_repos = {f"{a.prefix}/{c}" for c in a.clients}
    for line in lines:
        m = ACCESS.search(line)
        if not m:
            continue
        method, target, status = m.group(1), m.group(2), int(m.group(3))
        out["requests"] += 1
        if status >= 400 and not (method == "HEAD" and status == 404):
            out["errors"] += 1
        u = urllib.parse.urlsplit(target)
        q = urllib.parse.parse_qs(u.query)
        mm = re.match(r"^/v2/(.+)/(blobs/uploads|manifests)/", u.path)
        if not mm:
            continue
        repo, what = mm.group(1), mm.group(2)
        if what == "manifests":
            out["manifest_puts"] += method == "PUT" and status == 201
            continue
        if method == "POST" and status == 201 and "mount" in q:
            out["mounts_into_clients"] += repo in client_repos
            continue
        if method == "PUT" and status == 201:
            digest = (q.get("digest") or ["?"])[0]
            if repo == f"{a.prefix}/{a.core}":
                out["core_repo_uploads"] += 1
            elif repo in client_repos:
                k = kind.get((repo, digest), "other")
                key = {"client layer": "client_layer_uploads", "core layer": "core_layer_uploads_into_clients",
                       "config": "config_uploads"}.get(k, "other_uploads_into_clients")
                out[key] += 1
                out["uploaded"].append(f"{repo} {k} {digest[:19]}")
    print(json.dumps(out))


def plan(a):
    with open(a.plan_json) as f:
        plans = {p["name"]: p for p in json.load(f)}
    core = plans.get(a.core) or {}
    out = {"core_action": core.get("action"),
           "core_layers_built": sum(1 for x in core.get("layers", []) if x.get("build")),
           "clients": len(a.clients), "clients_repointed": 0, "clients_rebuilding_layers": 0,
           "clients_missing": 0, "clients_saying_repointed": 0}
    for c in a.clients:
        p = plans.get(c)
        if p is None:
            out["clients_missing"] += 1
            continue
        if any(x.get("build") for x in p.get("layers", [])):
            out["clients_rebuilding_layers"] += 1
        elif p.get("action") in ("assemble", "repoint"):
            out["clients_repointed"] += 1
        if any("re-point" in r for r in p.get("reasons", [])):
            out["clients_saying_repointed"] += 1
    print(json.dumps(out))


def first200(a):
    t0 = time.monotonic()
    run = subprocess.run(a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd, capture_output=True, text=True)
    t_run = time.monotonic() - t0
    if run.returncode != 0:
        with open(a.append, "a") as f:
            f.write(json.dumps({"image": a.image, "kind": a.kind, "ok": False,
                                "error": f"exit {run.returncode}: {run.stderr.strip()[-500:]}"}) + "\n")
        print(f"  {a.image} {a.kind}: docker run failed: {run.stderr.strip()[-500:]}", file=sys.stderr)
        return
    status = None
    while time.monotonic() - t0 < a.timeout:
        try:
            with urllib.request.urlopen(a.url, timeout=2) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except OSError:
            status = None
        if status == 200:
            break
        time.sleep(0.01)
    t = time.monotonic() - t0
    rec = {"image": a.image, "kind": a.kind, "ok": status == 200, "seconds": t, "docker_run_s": t_run,
           "container": run.stdout.strip(), "last_status": status,
           **({} if status == 200 else {"error": f"no 200 within {a.timeout} s (last: {status})"})}
    with open(a.append, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"  {a.image} {a.kind}: {t:.3f} s from docker run -d to 200 "
          f"(docker run returned after {t_run:.3f} s){'' if rec['ok'] else ': ' + rec['error']}", file=sys.stderr)
    print(rec["container"])


def retag(a):
    """Rewrites the names in a docker-archive (manifest.json's RepoTags, and
    `repositories`) to PREFIX/NAME:TAG, so that `docker load` of it touches no
    image name anyone else uses on a shared Docker engine."""
    import tarfile
    tmp = a.archive + ".tmp"
    with tarfile.open(a.archive) as src, tarfile.open(tmp, "w") as dst:
        for m in src.getmembers():
            f = src.extractfile(m) if m.isfile() else None
            if m.name in ("manifest.json", "repositories") and f is not None:
                doc = json.load(f)
                if m.name == "manifest.json":
                    for e in doc:
                        e["RepoTags"] = [f"{a.prefix}/{t}" for t in e.get("RepoTags") or []]
                else:
                    doc = {f"{a.prefix}/{k}": v for k, v in doc.items()}
                data = json.dumps(doc).encode()
                m.size = len(data)
                import io
                dst.addfile(m, io.BytesIO(data))
            else:
                dst.addfile(m, f)
    os.replace(tmp, a.archive)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd_name", required=True)
    p = sub.add_parser("sources")
    p.add_argument("dir")
    p.add_argument("--files", type=int, required=True)
    p.add_argument("--mib", type=int, required=True)
    p.add_argument("--minors", type=int, required=True)
    p.add_argument("--changed", type=int, required=True)
    p = sub.add_parser("uploads")
    p.add_argument("regdir")
    p.add_argument("--since", type=int, default=0)
    p.add_argument("--prefix", required=True)
    p.add_argument("--core", required=True)
    p.add_argument("--clients", nargs="+", required=True)
    p = sub.add_parser("plan")
    p.add_argument("plan_json")
    p.add_argument("--core", required=True)
    p.add_argument("--clients", nargs="+", required=True)
    p = sub.add_parser("first200")
    p.add_argument("--url", required=True)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--image", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--append", required=True, help="JSON lines file the record is added to")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = sub.add_parser("retag")
    p.add_argument("archive")
    p.add_argument("prefix")
    a = ap.parse_args()
    {"retag": retag, "sources": sources, "uploads": uploads, "plan": plan, "first200": first200}[a.cmd_name](a)


if __name__ == "__main__":
    main()
