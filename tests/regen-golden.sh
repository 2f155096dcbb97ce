#!/bin/sh
# Regenerates tests/fixtures/golden/digests.json after an intended change to
# what imgbuild writes (layer format, config, compressor). Review the diff and
# commit it together with the change that moved the digests.
set -eu
cd "$(dirname "$0")/.."
IMGBUILD_REGEN_GOLDEN=1 cargo test --test golden -- --nocapture
if command -v git >/dev/null 2>&1; then
    git --no-pager diff --stat -- tests/fixtures/golden/digests.json || true
fi
