#!/usr/bin/env python3
"""Generate a deterministic tree shaped like Moodle core (default ~29,700 files, ~290 MiB).

usage: gen-moodle-tree.py OUT_DIR [--files N] [--mib M] [--seed S] [--stats FILE]
"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in bench/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import treegen  # noqa: E402

if __name__ == "__main__":
    sys.exit(treegen.main(sys.argv[1:], "moodle"))
