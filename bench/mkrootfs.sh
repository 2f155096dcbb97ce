#!/usr/bin/env bash
# mkrootfs.sh: a Debian root filesystem tarball (~350 MiB unpacked) for bench/sandbox.sh,
# made by mmdebstrap from the real archive. Cached: regenerated only when it is missing
# or when the suite, mirror, variant or package list changed (bench/work/debian-rootfs.params).
# Writes bench/work/debian-rootfs.tar and bench/work/debian-rootfs.stats.json
# (unpacked bytes, files, dirs, symlinks, tarball bytes).
#
# Environment: ROOTFS_SUITE (trixie), ROOTFS_MIRROR (http://deb.debian.org/debian),
# ROOTFS_VARIANT (apt), ROOTFS_INCLUDE (the package list below), ROOTFS_MODE (root;
# unshare works unprivileged), BENCH_WORK (bench/work). Needs mmdebstrap (Debian package).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOTFS_SUITE=${ROOTFS_SUITE:-trixie}
ROOTFS_MIRROR=${ROOTFS_MIRROR:-http://deb.debian.org/debian}
ROOTFS_VARIANT=${ROOTFS_VARIANT:-apt}
ROOTFS_MODE=${ROOTFS_MODE:-root}
# What a typical "base + language runtimes" image holds.
ROOTFS_INCLUDE=${ROOTFS_INCLUDE:-ca-certificates,curl,wget,git,less,locales,openssh-client,perl,procps,iproute2,python3,python3-pip,python3-venv,rsync,unzip,vim-tiny,xz-utils,bzip2,file,gnupg}

TAR=${1:-$WORK/debian-rootfs.tar}
base=${TAR%.tar}
want="suite=$ROOTFS_SUITE mirror=$ROOTFS_MIRROR variant=$ROOTFS_VARIANT include=$ROOTFS_INCLUDE"
mkdir -p "$(dirname "$TAR")"
if [[ -f $TAR && -f $base.stats.json && -f $base.params && $(<"$base.params") == "$want" ]]; then
    log "rootfs: $TAR is there ($ROOTFS_SUITE, $(du -m "$TAR" | cut -f1) MiB)"
    exit 0
fi
if ! command -v mmdebstrap >/dev/null; then
    warn "rootfs: mmdebstrap is not installed (apt-get install mmdebstrap); no root filesystem"
    exit 1
fi
log "rootfs: mmdebstrap $ROOTFS_SUITE ($ROOTFS_VARIANT + $ROOTFS_INCLUDE) -> $TAR"
rm -rf --one-file-system "$TAR" "$base.tmp.tar" "$base.stats.json" "$base.params"
mmdebstrap --mode="$ROOTFS_MODE" --variant="$ROOTFS_VARIANT" --include="$ROOTFS_INCLUDE" \
    --quiet "$ROOTFS_SUITE" "$base.tmp.tar" "$ROOTFS_MIRROR"  # the name must end in .tar: mmdebstrap picks the format by it
mv "$base.tmp.tar" "$TAR"
python3 - "$TAR" "$base.stats.json" "$ROOTFS_SUITE" "$ROOTFS_INCLUDE" <<'PY'
import json, os, sys, tarfile
path, out, suite, include = sys.argv[1:]
st = {"suite": suite, "include": include.split(","), "files": 0, "dirs": 0, "symlinks": 0,
      "hardlinks": 0, "other": 0, "bytes": 0, "tar_bytes": os.path.getsize(path)}
with tarfile.open(path) as t:
    for m in t:
        if m.isreg():
            st["files"] += 1
            st["bytes"] += m.size
        elif m.isdir():
            st["dirs"] += 1
        elif m.issym():
            st["symlinks"] += 1
        elif m.islnk():
            st["hardlinks"] += 1
        else:
            st["other"] += 1
json.dump(st, open(out, "w"), indent=2)
print(f"rootfs: {st['files']:,} files, {st['dirs']:,} dirs, {st['symlinks']:,} symlinks, "
      f"{st['bytes'] / 2**20:.1f} MiB unpacked, tarball {st['tar_bytes'] / 2**20:.1f} MiB", file=sys.stderr)
PY
printf '%s\n' "$want" >"$base.params"
