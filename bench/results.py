"""What the bench scripts' reports share: measure.py's result files, read."""

import json
import os
import statistics


def load(path):
    """A JSON file, or None when it is missing or broken."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def results(d):
    """measure.py's results in directory `d`, by name."""
    r = {}
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".json"):
            x = load(os.path.join(d, fn))
            if isinstance(x, dict) and "name" in x and "runs" in x:
                r[x["name"]] = x
    return r


def ok(x):
    return bool(x and x.get("ok") and x.get("runs"))


def med(x):
    """The median wall time of a result's runs, None without any."""
    return statistics.median(y["wall_s"] for y in x["runs"]) if ok(x) else None
