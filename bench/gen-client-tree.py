#!/usr/bin/env python3
"""Generate one deterministic fleet client tree (default ~200 files, ~2 MiB):
config.php, a theme, a local plugin and a block.

usage: gen-client-tree.py OUT_DIR --seed S [--name NAME] [--files N] [--mib M]
"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in bench/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import treegen  # noqa: E402

if __name__ == "__main__":
    sys.exit(treegen.main(sys.argv[1:], "client"))
