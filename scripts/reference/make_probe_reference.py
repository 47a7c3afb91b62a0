#!/usr/bin/env python3
"""scikit-learn / scipy reference values for `interplab_analysis::probe`.

Writes crates/analysis/tests/fixtures/probe_reference.json with:
- `logistic`: a synthetic data set (numpy, seeded) and the weights and bias of
  sklearn.linear_model.LogisticRegression(C, lbfgs, tol 1e-12) on it, for two values of C.
  Interplab's objective is sklearn's divided by C·n, so its `l2` is 1 / (C·n).
- `auroc`: score/label cases with ties and sklearn.metrics.roc_auc_score of each.
- `wilson`: (k, n) and scipy.stats.binomtest(k, n).proportion_ci(0.95, method="wilson").

Usage (any Python with the packages of requirements-probe.txt):
    python3 -m venv /tmp/venv-ref && /tmp/venv-ref/bin/pip install -r scripts/reference/requirements-probe.txt
    /tmp/venv-ref/bin/python scripts/reference/make_probe_reference.py
"""
import json
import os

import numpy as np
import scipy
import sklearn
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "analysis", "tests", "fixtures", "probe_reference.json")


def main():
    rng = np.random.default_rng(20261203)
    n, d = 240, 12
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    y = (np.arange(n) % 3 != 0)  # unbalanced: 160 positives, 80 negatives
    # Offsets and unequal scales, and classes that overlap (a finite optimum).
    x = 0.8 * np.where(y, 1.0, -1.0)[:, None] * u[None, :] + rng.normal(size=(n, d))
    x = x * (1.0 + np.arange(d) / 4.0) + np.arange(d)
    x = x.astype(np.float32)
    fits = []
    for c in (1.0, 0.05):
        m = LogisticRegression(C=c, solver="lbfgs", tol=1e-12, max_iter=100000)
        m.fit(x.astype(np.float64), y)
        fits.append({"C": c, "l2": 1.0 / (c * n), "weights": m.coef_[0].tolist(),
                     "bias": float(m.intercept_[0])})
    auroc = []
    for trial in range(6):
        k = 20 + 15 * trial
        s = rng.integers(0, 5 + trial, size=k).astype(float)
        lab = rng.random(k) < 0.4
        lab[0], lab[1] = True, False
        auroc.append({"scores": s.tolist(), "labels": lab.tolist(),
                      "auroc": float(roc_auc_score(lab, s))})
    wilson = []
    for k, m in [(81, 263), (0, 10), (10, 10), (1, 2), (733, 1000), (37, 50)]:
        ci = binomtest(k, m).proportion_ci(confidence_level=0.95, method="wilson")
        wilson.append({"k": k, "n": m, "low": ci.low, "high": ci.high})
    out = {
        "generated_by": "scripts/reference/make_probe_reference.py",
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__,
                     "sklearn": sklearn.__version__},
        "logistic": {"n": n, "d": d, "x": x.ravel().tolist(), "y": y.tolist(), "fits": fits},
        "auroc": auroc,
        "wilson": wilson,
    }
    with open(OUT, "w") as f:
        json.dump(out, f)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
