#!/usr/bin/env bash
# Builds an upstream skopeo with sigstore support from source, for the one
# test Debian's skopeo cannot run: tests/supply_chain.rs's
# skopeo_verifies_imgbuild_signatures_and_imgbuild_verifies_skopeos (Debian
# patches sigstore out of its skopeo 1.9). Not part of CI: CI cannot fetch the
# skopeo repository.
#
#   ci/upstream-skopeo.sh DIR        # puts the binary at DIR/bin/skopeo
#   PATH=DIR/bin:$PATH cargo test --test supply_chain -- --ignored skopeo
#
# SKOPEO_GIT: a bare git directory of github.com/containers/skopeo (default:
# the first one found under /work/.mirror). SKOPEO_REF: the tag to build
# (default v1.13.3, the newest whose vendored dependencies Debian bookworm's
# Go 1.19 still compiles). Needs Debian's golang-go (installed if missing) and
# nothing from the network besides: skopeo vendors its Go dependencies.
set -euo pipefail

dest=${1:?usage: ci/upstream-skopeo.sh DIR}
ref=${SKOPEO_REF:-v1.13.3}
git_dir=${SKOPEO_GIT:-}
if [ -z "$git_dir" ]; then
  for d in /work/.mirror/*skopeo*/repo /work/.mirror/*skopeo*; do
    if git --git-dir="$d" rev-parse -q --verify "$ref^{commit}" >/dev/null 2>&1; then
      git_dir=$d
      break
    fi
  done
fi
[ -n "$git_dir" ] || {
  echo "ci/upstream-skopeo.sh: no skopeo git dir with $ref; set SKOPEO_GIT" >&2
  exit 2
}
commit=$(git --git-dir="$git_dir" rev-parse "$ref^{commit}")

if ! command -v go >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends golang-go >/dev/null
fi

src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git --git-dir="$git_dir" archive "$commit" | tar -x -C "$src"
mkdir -p "$dest/bin"
# The tags drop what needs C libraries (gpgme, btrfs, devicemapper), so the
# binary is static; sigstore stays in, it is pure Go. GOTOOLCHAIN=local keeps
# a newer Go from trying to download another toolchain; -trimpath keeps the
# temporary source path out, so the same tag gives the same binary.
(
  cd "$src"
  GOFLAGS=-mod=vendor CGO_ENABLED=0 GOTOOLCHAIN=local \
    GOPATH=${GOPATH:-$src/.gopath} GOCACHE=${GOCACHE:-$src/.gocache} \
    go build -trimpath -ldflags "-X main.gitCommit=$commit" \
    -tags "containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper" \
    -o "$dest/bin/skopeo.new" ./cmd/skopeo
)
# Replaced whole, so a failed build leaves the previous binary in place.
mv "$dest/bin/skopeo.new" "$dest/bin/skopeo"
"$dest/bin/skopeo" --version
