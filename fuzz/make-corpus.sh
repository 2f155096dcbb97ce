#!/usr/bin/env bash
# make-corpus.sh: a small seed corpus per target in fuzz/corpus/TARGET,
# from the repository's own files and a few hand-made inputs.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
c=$here/corpus
rm -rf "$c"
mkdir -p "$c"/{spec,reference,manifest,unpack}
cp "$repo/images.yaml" "$c/spec/fleet.yaml"
i=0
for f in $(find "$repo/tests" "$repo/clients" -name '*.yaml' | sort | head -40); do
    cp "$f" "$c/spec/seed-$i.yaml"; i=$((i + 1))
done
printf 'vars:\n  a: ${b}\n  b: ${a}\nimages:\n  x: {from: scratch}\n' >"$c/spec/cycle.yaml"
n=0
for r in debian:trixie docker.io/library/debian:trixie-slim localhost:5000/fleet/app:v1 \
    'registry.example.com/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef' \
    '[::1]:5000/x:y' 'Bearer realm="https://auth.example.com/token",service="reg",scope="repository:a/b:pull,push"' \
    'Basic realm="x"'; do
    printf '%s' "$r" >"$c/reference/seed-$n"; n=$((n + 1))
done
d=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":3}]}' "$d" "$d" >"$c/manifest/manifest.json"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":7,"platform":{"architecture":"amd64","os":"linux"}}]}' "$d" >"$c/manifest/index.json"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{"Env":["A=b"]}}' "$d" >"$c/manifest/config.json"
# Tars: plain files, a directory, a symlink and a hard link, whiteouts, a
# long (PAX) name, and hostile names.
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
(
    cd "$t"
    mkdir -p a/b && echo hi >a/b/f && ln -s ../b/f a/link && ln a/b/f a/hard
    touch a/.wh.gone a/b/.wh..wh..opq
    long=a/$(printf 'x%.0s' $(seq 1 150)) && echo long >"$long"
    tar --format=pax -cf "$c/unpack/tree.tar" a
    tar --format=gnu -cf "$c/unpack/gnu.tar" a
    ln -s /etc evil && tar -cf "$c/unpack/symlink-out.tar" evil
    tar -cf "$c/unpack/dotdot.tar" --transform 's,^a/b/f,../../escape,' a/b/f
    tar -cf "$c/unpack/abs.tar" -P --transform 's,^a/b/f,/abs-escape,' a/b/f
)
echo "corpus in $c: $(find "$c" -type f | wc -l) files"
