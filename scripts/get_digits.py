#!/usr/bin/env python3
"""Regenerate examples/data/digits.csv from the copy of the UCI 8x8 hand-written digits that
scikit-learn bundles (sklearn/datasets/data/digits.csv.gz): 1797 rows of 64 pixel values
(0..16) followed by the class label (0..9). Needs `pip install scikit-learn`; run from anywhere.
"""
import gzip
import os
import sys


def main() -> int:
    try:
        import sklearn
    except ImportError:
        print("get_digits.py: scikit-learn is not installed (pip install scikit-learn)", file=sys.stderr)
        return 1
    src = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data", "digits.csv.gz")
    dst = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "data", "digits.csv")
    with gzip.open(src, "rt") as f:
        text = f.read()
    rows = [r for r in text.splitlines() if r.strip()]
    # Check the shape the example relies on before writing anything.
    for r in rows:
        vals = [int(float(v)) for v in r.split(",")]
        if len(vals) != 65 or not all(0 <= v <= 16 for v in vals[:64]) or not 0 <= vals[64] <= 9:
            print("get_digits.py: unexpected row: " + r[:80], file=sys.stderr)
            return 1
    if len(rows) != 1797:
        print("get_digits.py: expected 1797 rows, got %d" % len(rows), file=sys.stderr)
        return 1
    with open(dst, "w", newline="\n") as f:
        f.write("\n".join(rows) + "\n")
    print("wrote %s (%d rows)" % (os.path.normpath(dst), len(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
