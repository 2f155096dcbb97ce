"""What the bench scripts' reports share: measure.py's result files, read."""

import json
import os
import statistics
import sys


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


def rss_mib(x):
    """A result's peak RSS in MiB, or None when it was not measured: a failed
    result, or any run whose GNU time output gave no positive figure (a real
    process never has a peak RSS of 0)."""
    if not ok(x):
        return None
    if any(not (y.get("max_rss_kib") or 0) > 0 for y in x["runs"]):
        return None
    v = x.get("max_rss_mib")
    return v if isinstance(v, (int, float)) and v > 0 else None


def peak_rss(results):
    """The largest peak RSS of these results, None unless every one was
    measured (a figure over some of them would hide the missing ones)."""
    vals = [rss_mib(x) for x in results]
    return None if not vals or any(v is None for v in vals) else max(vals)


def cpu_s(x):
    """Mean user + system CPU seconds of a result's runs, None if unmeasured."""
    if not ok(x):
        return None
    per = [y.get("user_s") for y in x["runs"]], [y.get("sys_s") for y in x["runs"]]
    if any(v is None for v in per[0] + per[1]):
        return None
    return sum(u + s for u, s in zip(*per)) / len(x["runs"])


def built_layers(text):
    """How many layers a `build --json` report (`text`) says were built, or
    None when it is not such a report."""
    try:
        report = json.loads(text)
        return sum(1 for i in report["images"] for layer in i["layers"] if layer["built"])
    except (ValueError, KeyError, TypeError):
        return None


if __name__ == "__main__":
    # results.py built-layers FILE: prints the count, or "n/a".
    if len(sys.argv) == 3 and sys.argv[1] == "built-layers":
        try:
            with open(sys.argv[2]) as f:
                n = built_layers(f.read())
        except OSError:
            n = None
        print("n/a" if n is None else n)
    else:
        sys.exit("usage: results.py built-layers BUILD_JSON")
