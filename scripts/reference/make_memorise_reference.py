#!/usr/bin/env python3
"""scipy reference values for the correlations of `interplab_analysis::memorise`.

Writes crates/analysis/tests/fixtures/memorise_reference.json with two vectors x, y (seeded,
rounded to tenths so that ties occur, as similarities of short continuations do) and
- `pearson`, `pearson_ci`: scipy.stats.pearsonr(x, y) and its confidence_interval(0.95)
  (the Fisher z transform);
- `spearman`: scipy.stats.spearmanr(x, y).statistic (average ranks for ties);
- `t_975`: scipy.stats.t.ppf(0.975, df) for df = 1..30 (the t-intervals of `w2s`).

Usage (the venv of requirements-probe.txt):
    /tmp/venv-ref/bin/python scripts/reference/make_memorise_reference.py
"""
import json
import os

import numpy as np
import scipy
from scipy.stats import pearsonr, spearmanr, t

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "analysis", "tests", "fixtures", "memorise_reference.json")


def main():
    rng = np.random.default_rng(20261203)
    x = np.round(rng.uniform(0, 1, 40), 1)
    y = np.round(np.clip(0.6 * x + rng.normal(0, 0.3, 40), 0, 1), 1)
    p = pearsonr(x, y)
    ci = p.confidence_interval(0.95)
    out = {
        "scipy": scipy.__version__,
        "x": x.tolist(),
        "y": y.tolist(),
        "pearson": float(p.statistic),
        "pearson_ci": [float(ci.low), float(ci.high)],
        "spearman": float(spearmanr(x, y).statistic),
        "t_975": [float(t.ppf(0.975, df)) for df in range(1, 31)],
    }
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
