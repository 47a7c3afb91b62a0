#!/usr/bin/env python3
"""scipy / statsmodels reference values for the eval statistics of `interplab_analysis::stats`.

Writes crates/analysis/tests/fixtures/eval_stats_reference.json. Every fixture is written here
(numpy's default_rng with fixed seeds, or literal numbers); every expected value is computed by
scipy or statsmodels, never by hand:

- `normal_quantile`, `normal_cdf`: scipy.stats.norm.ppf / .cdf / .sf on grids reaching far
  into the tails.
- `student_t`: scipy.stats.t.cdf / .sf over a grid of t and df (scipy.stats.cauchy for df = 1,
  see below); `student_t_quantile`: scipy.stats.t.ppf.
- `binomial_cdf`: scipy.stats.binom.cdf; `chi_square_sf`: scipy.stats.chi2.sf.
- `mcnemar`: statsmodels.stats.contingency_tables.mcnemar(table, exact=True) and
  (exact=False, correction=True/False) on 2x2 tables [[n11, b], [c, n22]], including the
  Agresti (1990, p. 350) presidential approval table 794/150/86/570.
- `clustered`: statsmodels OLS(y, ones).fit(cov_type="cluster", cov_kwds={"groups": g}).bse[0]
  (CR1: G/(G-1)·(N-1)/(N-K)), and the non-robust bse for comparison with mean_stderr.
- `bootstrap`: scipy.stats.bootstrap(method="percentile") of the mean, repeated over `repeats`
  seeds; the mean and standard deviation of each endpoint over the repeats size the Monte-Carlo
  tolerance of the Rust test.
- `coverage`: the coverage the percentile interval of the mean should have on normal samples of
  size n: P(|T_{n-1}| <= z_{0.975}·sqrt((n-1)/n)) (the percentile interval is close to
  mean ± z·s_0/sqrt(n), s_0 the ddof=0 sd), from scipy.stats.t.cdf, and a simulation of scipy's
  own bootstrap that checks that approximation.
- `paired`: scipy.stats.ttest_rel (statistic, pvalue, df, confidence_interval) and
  scipy.stats.bootstrap(paired=True, method="percentile") of mean(a - b), with the two-sided
  bootstrap p-value of `interplab_analysis::stats::paired_bootstrap` computed from scipy's
  bootstrap_distribution, over `repeats` seeds.
- `sleep`: scipy.stats.ttest_rel on Student's sleep data (Cushny & Peebles; R's `sleep`).
- `binary`: paired bool vectors, their discordant counts and statsmodels' exact McNemar p.
- `mde`: (z_{1-a/2} + z_power)·sd/sqrt(n) with scipy.stats.norm.ppf, and statsmodels'
  NormalIndPower(ratio=0).solve_power(alpha=a/2, alternative="larger")·sd, which solves the same
  one-sided equation numerically.

Non-finite results (statsmodels' chi-square of a table with no discordant pairs: NaN, or inf
with the continuity correction) are written as null.

Usage (the venv of requirements-eval-stats.txt; the output is byte-for-byte reproducible):
    python3 -m venv /tmp/venv-ref && /tmp/venv-ref/bin/pip install -r scripts/reference/requirements-eval-stats.txt
    /tmp/venv-ref/bin/python scripts/reference/make_eval_stats_reference.py
"""
import json
import math
import os

import numpy as np
import scipy
import statsmodels
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import NormalIndPower

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "analysis", "tests", "fixtures", "eval_stats_reference.json")

REPEATS = 30
N_RESAMPLES = 10000
CONFIDENCE = 0.95


def num(x):
    x = float(x)
    return x if math.isfinite(x) else None


def bootstrap_p(dist):
    """Two-sided bootstrap p-value of `paired_bootstrap`: 2·min(#{θ* ≤ 0} + 1, #{θ* ≥ 0} + 1)
    / (B + 1), capped at 1."""
    b = len(dist)
    lo = np.count_nonzero(dist <= 0.0) + 1
    hi = np.count_nonzero(dist >= 0.0) + 1
    return min(1.0, 2.0 * min(lo, hi) / (b + 1))


def repeated(samples, statistic, paired, seed0):
    lows, highs, ps = [], [], []
    for r in range(REPEATS):
        res = stats.bootstrap(samples, statistic, n_resamples=N_RESAMPLES, vectorized=True,
                              paired=paired, confidence_level=CONFIDENCE, method="percentile",
                              rng=np.random.default_rng(seed0 + r))
        lows.append(res.confidence_interval.low)
        highs.append(res.confidence_interval.high)
        ps.append(bootstrap_p(res.bootstrap_distribution))
    summary = lambda v: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1))}
    return {"low": summary(lows), "high": summary(highs), "p_value": summary(ps)}


def main():
    out = {"scipy": scipy.__version__, "statsmodels": statsmodels.__version__,
           "numpy": np.__version__}

    # Special functions.
    ps = [1e-300, 1e-100, 1e-20, 1e-10, 1e-5, 1e-3, 0.01, 0.025, 0.05, 0.075, 0.0751, 0.1, 0.2,
          0.3, 0.4, 0.45, 0.5, 0.55, 0.7, 0.8, 0.9, 0.925, 0.95, 0.975, 0.99, 0.999, 1 - 1e-10]
    out["normal_quantile"] = [{"p": p, "x": float(stats.norm.ppf(p))} for p in ps]
    zs = [-38.0, -20.0, -10.0, -5.0, -2.0, -1.0, -0.5, -1e-9, 0.0, 0.3, 1.0, 1.959963984540054,
          3.0, 8.0, 30.0]
    out["normal_cdf"] = [{"z": z, "cdf": float(stats.norm.cdf(z)), "sf": float(stats.norm.sf(z))}
                         for z in zs]
    dfs = [1.0, 2.0, 3.0, 4.5, 9.0, 10.0, 29.0, 100.0, 1000.0, 1e5]
    ts = [-1000.0, -30.0, -5.0, -2.262, -1.0, -0.1, 0.0, 1e-8, 0.5, 2.0, 4.0621, 10.0, 100.0]
    # For df = 1 the reference is scipy.stats.cauchy (the same distribution, by arctan):
    # scipy 1.17's t.cdf(1e-8, 1) = 0.500000004743 is 1.6e-9 above the exact 0.5 + atan(1e-8)/pi.
    dist = lambda df: stats.cauchy if df == 1.0 else stats.t(df)
    out["student_t"] = [{"t": t, "df": df, "cdf": float(dist(df).cdf(t)),
                         "sf": float(dist(df).sf(t)),
                         "reference": "scipy.stats.cauchy" if df == 1.0 else "scipy.stats.t"}
                        for df in dfs for t in ts]
    qs = [1e-12, 1e-6, 1e-3, 0.025, 0.3, 0.5, 0.8, 0.975, 0.999999]
    out["student_t_quantile"] = [{"p": p, "df": df, "t": float(stats.t.ppf(p, df))}
                                 for df in [1.0, 2.0, 5.0, 9.0, 30.0, 200.0, 1e4] for p in qs]
    cases = [(0, 0, 0.5), (0, 1, 0.5), (3, 15, 0.5), (86, 236, 0.5), (118, 236, 0.5),
             (10, 100, 0.3), (45, 100, 0.3), (0, 50, 0.5), (49, 50, 0.5), (450, 1000, 0.5),
             (500, 1000, 0.5), (2000, 5000, 0.5), (7, 20, 0.9), (40000, 100000, 0.4)]
    out["binomial_cdf"] = [{"k": k, "n": n, "p": p, "cdf": float(stats.binom.cdf(k, n, p))}
                           for k, n, p in cases]
    out["chi_square_sf"] = [{"x": x, "df": df, "sf": float(stats.chi2.sf(x, df))}
                            for df in [1.0, 2.0, 5.0] for x in [0.0, 1e-6, 0.1, 1.0, 3.84, 16.8,
                                                                  17.36, 50.0, 400.0]]

    # McNemar.
    tables = [(794, 150, 86, 570), (10, 0, 0, 10), (5, 3, 12, 9), (20, 7, 7, 30), (0, 25, 0, 0),
              (100, 1, 2, 100), (300, 1020, 980, 300), (40, 6, 1, 40), (3, 40, 70, 3)]
    mc = []
    for n11, b, c, n22 in tables:
        t = np.array([[n11, b], [c, n22]])
        ex = mcnemar(t, exact=True)
        cc = mcnemar(t, exact=False, correction=True)
        nc = mcnemar(t, exact=False, correction=False)
        mc.append({"table": [n11, b, c, n22], "exact_statistic": num(ex.statistic),
                   "exact_p": num(ex.pvalue), "chi2_corrected": num(cc.statistic),
                   "chi2_corrected_p": num(cc.pvalue), "chi2": num(nc.statistic),
                   "chi2_p": num(nc.pvalue)})
    out["mcnemar"] = mc

    # Clustered standard errors.
    rng = np.random.default_rng(20270101)
    clustered = []
    for sizes in ([1, 9, 4, 7, 2, 12, 8], [5, 11], [3, 3, 3, 3, 3, 3, 3, 3, 3, 3]):
        g = np.repeat(np.arange(len(sizes)), sizes)
        effect = rng.normal(0.0, 0.8, len(sizes))
        y = 0.4 + effect[g] + rng.normal(0.0, 1.0, len(g))
        perm = rng.permutation(len(g))  # clusters interleaved, not contiguous
        y, g = y[perm], g[perm]
        x = np.ones((len(y), 1))
        robust = sm.OLS(y, x).fit(cov_type="cluster", cov_kwds={"groups": g})
        plain = sm.OLS(y, x).fit()
        clustered.append({"values": y.tolist(), "clusters": g.tolist(),
                          "mean": float(robust.params[0]), "se": float(robust.bse[0]),
                          "nonrobust_se": float(plain.bse[0])})
    out["clustered"] = clustered

    # Bootstrap of one mean.
    rng = np.random.default_rng(20270102)
    x = rng.normal(0.5, 1.3, 40)
    mean = lambda v, axis=-1: np.mean(v, axis=axis)
    boot = repeated((x,), mean, False, 1000)
    del boot["p_value"]
    out["bootstrap"] = {"values": x.tolist(), "n_resamples": N_RESAMPLES,
                        "confidence": CONFIDENCE, "repeats": REPEATS, **boot}

    # Coverage of the percentile interval on normal samples.
    n_cov, reps, b_cov = 30, 2000, 1000
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    c = z * math.sqrt((n_cov - 1) / n_cov)
    expected = float(stats.t.cdf(c, n_cov - 1) - stats.t.cdf(-c, n_cov - 1))
    rng = np.random.default_rng(20270103)
    hits = 0
    for _ in range(reps):
        s = rng.normal(0.0, 1.0, n_cov)
        ci = stats.bootstrap((s,), mean, n_resamples=b_cov, vectorized=True,
                             method="percentile", rng=rng).confidence_interval
        hits += ci.low <= 0.0 <= ci.high
    simulated = hits / reps
    sd = math.sqrt(expected * (1 - expected) / reps)
    assert abs(simulated - expected) < 4 * sd + 0.005, (simulated, expected)
    out["coverage"] = {"n": n_cov, "datasets": reps, "n_resamples": b_cov,
                       "confidence": CONFIDENCE, "expected": expected,
                       "scipy_simulated": simulated}

    # Paired continuous comparison.
    rng = np.random.default_rng(20270104)
    a = rng.normal(0.6, 0.25, 30)
    b = a - 0.03 + rng.normal(0.0, 0.15, 30)  # a modest effect: p-values well above 1/B
    tt = stats.ttest_rel(a, b)
    ci = tt.confidence_interval(CONFIDENCE)
    diff = lambda u, v, axis=-1: np.mean(u - v, axis=axis)
    pb = repeated((a, b), diff, True, 2000)
    out["paired"] = {"a": a.tolist(), "b": b.tolist(), "mean_difference": float(np.mean(a - b)),
                     "sd_difference": float(np.std(a - b, ddof=1)),
                     "t": float(tt.statistic), "df": float(tt.df), "p": float(tt.pvalue),
                     "t_ci": [float(ci.low), float(ci.high)], "n_resamples": N_RESAMPLES,
                     "confidence": CONFIDENCE, "repeats": REPEATS, "bootstrap": pb}

    # Student's sleep data (R's `sleep`: extra hours of sleep under two drugs, same 10 patients).
    g1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    g2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    st = stats.ttest_rel(g1, g2)
    sci = st.confidence_interval(CONFIDENCE)
    out["sleep"] = {"group1": g1, "group2": g2, "t": float(st.statistic), "df": float(st.df),
                    "p": float(st.pvalue), "ci": [float(sci.low), float(sci.high)]}

    # Paired binary outcomes.
    rng = np.random.default_rng(20270105)
    n_bin = 300
    ability = rng.normal(0.0, 1.0, n_bin)
    ya = rng.random(n_bin) < 1 / (1 + np.exp(-(ability + 0.35)))
    yb = rng.random(n_bin) < 1 / (1 + np.exp(-ability))
    bb = int(np.sum(ya & ~yb))
    cc = int(np.sum(~ya & yb))
    table = np.array([[int(np.sum(ya & yb)), bb], [cc, int(np.sum(~ya & ~yb))]])
    out["binary"] = {"a": ya.tolist(), "b": yb.tolist(), "a_only": bb, "b_only": cc,
                     "exact_p": float(mcnemar(table, exact=True).pvalue),
                     "chi2_corrected_p": float(mcnemar(table, exact=False,
                                                       correction=True).pvalue)}

    # Minimum detectable effects.
    mde = []
    power_solver = NormalIndPower()
    for n, sd, alpha, power in [(100, 1.0, 0.05, 0.8), (30, 0.12, 0.05, 0.8),
                                (500, math.sqrt(0.2), 0.05, 0.8), (1000, 0.5, 0.01, 0.9),
                                (2000, math.sqrt(0.7 * 0.35 + 0.65 * 0.3), 0.05, 0.8)]:
        closed = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sd / math.sqrt(n)
        solved = power_solver.solve_power(effect_size=None, nobs1=n, alpha=alpha / 2,
                                          power=power, ratio=0, alternative="larger") * sd
        mde.append({"n": n, "sd": sd, "alpha": alpha, "power": power, "mde": float(closed),
                    "statsmodels": float(solved)})
    out["mde"] = mde
    out["z_975"] = float(stats.norm.ppf(0.975))
    out["z_80"] = float(stats.norm.ppf(0.8))

    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, allow_nan=False)
        f.write("\n")


if __name__ == "__main__":
    main()
