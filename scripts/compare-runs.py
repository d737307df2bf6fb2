#!/usr/bin/env python3
"""Compare two run directories of the same profile file by file.

A refactor that must not change behaviour ("artifacts of an unchanged
profile stay byte-identical") is checked by running the same profile with
the binary before and after into two directories and comparing them here:
weights, stores and data must be equal byte for byte; JSON files may differ
only in what a second run cannot reproduce (times, speeds, creation stamps,
the run directory's own path and the manifest hashes that follow from
them). Exit status 1 names every other difference.

    scripts/compare-runs.py RUN_BEFORE RUN_AFTER
"""
import json
import os
import sys

# Keys a rerun cannot reproduce: clocks, speeds, where the run lives, and
# hashes of manifests that hold those.
VOLATILE = {
    "created_unix", "git_rev", "images_per_sec", "train_images_per_sec",
    "inference_images_per_sec", "train_seconds", "epoch_seconds",
    "eval_seconds", "seconds", "manifest_hash", "dataset_hash", "path",
    "rel", "run", "bytes", "store", "dataset",
}
# Text outputs that print speeds (the report, per-epoch CSV).
TIMED_TEXT = {"curves.csv", "report.md"}


def files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = p
    return out


def strip(j):
    if isinstance(j, dict):
        return {k: strip(v) for k, v in j.items() if k not in VOLATILE}
    if isinstance(j, list):
        return [strip(v) for v in j]
    return j


def main(a_root, b_root):
    a, b = files(a_root), files(b_root)
    bad = [f"only in {a_root}: {k}" for k in sorted(set(a) - set(b))]
    bad += [f"only in {b_root}: {k}" for k in sorted(set(b) - set(a))]
    same = timed = 0
    for k in sorted(set(a) & set(b)):
        x, y = open(a[k], "rb").read(), open(b[k], "rb").read()
        if x == y:
            same += 1
            continue
        if k.endswith(".json") and strip(json.loads(x)) == strip(json.loads(y)):
            timed += 1
            continue
        if os.path.basename(k) in TIMED_TEXT or k.endswith(".png"):
            timed += 1
            continue
        bad.append(f"differs: {k}")
    print(f"{same} files byte-identical, {timed} differ only in times/paths/plots")
    for line in bad:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
