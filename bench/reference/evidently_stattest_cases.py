#!/usr/bin/env python3
"""Evidently 0.7 / scipy reference values for lightops' drift statistics, on synthetic columns.

Writes (to stdout) one JSON object with
- "cases": synthetic reference/current columns (as value counts) covering every branch of
  Evidently's default test choice and every test lightops implements, each with Evidently's
  result for the default test and for every test Evidently allows on that column type
  (score, drifted, threshold), plus scipy's KS statistic where KS applies;
- "special": scipy's special functions on grids crossing their internal branches
  (scipy.special.ndtr, scipy.special.chdtrc, scipy.stats.kstwo.sf, scipy.special.smirnov).

    python3 bench/reference/evidently_stattest_cases.py > bench/reference/evidently_stattest_cases.json

The columns are deterministic (numpy default_rng with fixed seeds). Needs evidently==0.7.*
(pandas < 3); see docs/drift.md.
"""
import json
import math
import sys

import numpy as np
import pandas as pd
import scipy
import scipy.special
import scipy.stats

import evidently
from evidently.legacy.calculations.stattests.registry import get_stattest
from evidently.legacy.core import ColumnType

NUMERICAL_METHODS = ["wasserstein", "ks", "psi", "jensenshannon"]
CATEGORICAL_METHODS = ["chisquare", "z", "psi", "jensenshannon"]


def number(value):
    value = float(value)
    return value if math.isfinite(value) else None


def counts(series):
    vc = series.value_counts().sort_index()
    values = [v.item() if hasattr(v, "item") else v for v in vc.index]
    return {"values": values, "counts": [int(c) for c in vc.values]}


def run(name, kind, reference, current):
    column_type = ColumnType.Numerical if kind == "numerical" else ColumnType.Categorical
    results = []
    default = get_stattest(reference, current, column_type, None)
    result = default(reference, current, column_type, None)
    results.append(
        {
            "method": default.name,
            "explicit": False,
            "score": number(result.drift_score),
            "drifted": bool(result.drifted),
            "threshold": result.actual_threshold,
        }
    )
    for method in NUMERICAL_METHODS if kind == "numerical" else CATEGORICAL_METHODS:
        stattest = get_stattest(reference, current, column_type, method)
        result = stattest(reference, current, column_type, None)
        results.append(
            {
                "method": method,
                "explicit": True,
                "score": number(result.drift_score),
                "drifted": bool(result.drifted),
                "threshold": result.actual_threshold,
            }
        )
    case = {"name": name, "kind": kind, "reference": counts(reference), "current": counts(current), "results": results}
    if kind == "numerical":
        ks = scipy.stats.ks_2samp(reference, current)
        case["ks_statistic"] = float(ks.statistic)
    return case


def numeric(rng, n, loc=0.0, scale=1.0, decimals=2):
    return pd.Series(np.round(rng.normal(loc, scale, n), decimals))


def cases():
    rng = np.random.default_rng(20220601)
    out = []
    # Small reference: KS, exact (unequal and equal sizes).
    out.append(run("ks_exact_unequal", "numerical", numeric(rng, 300), numeric(rng, 500, 0.2)))
    out.append(run("ks_exact_equal", "numerical", numeric(rng, 400), numeric(rng, 400, 0.15)))
    out.append(run("ks_exact_same", "numerical", numeric(rng, 700, 0, 1, 1), numeric(rng, 900, 0, 1, 1)))
    # Small reference, large current: KS asymptotic (max(n1, n2) > 10,000), en ~ 770 (> 140).
    out.append(run("ks_asymp_smirnov", "numerical", numeric(rng, 800), numeric(rng, 20000, 0.25)))
    out.append(run("ks_asymp_small_d", "numerical", numeric(rng, 800), numeric(rng, 20000, 0.01)))
    out.append(run("ks_asymp_far", "numerical", numeric(rng, 800), numeric(rng, 20000, 3.0)))
    # en ~ 99 (<= 140): DMTW / Pomeranz / 2*smirnov.
    out.append(run("ks_asymp_n99_a", "numerical", numeric(rng, 100), numeric(rng, 15000, 0.02)))
    out.append(run("ks_asymp_n99_b", "numerical", numeric(rng, 100), numeric(rng, 15000, 0.2)))
    out.append(run("ks_asymp_n99_c", "numerical", numeric(rng, 100), numeric(rng, 15000, 0.6)))
    # Large both sides (explicit KS on a large reference): en ~ 27,000.
    out.append(run("large_shifted", "numerical", numeric(rng, 50000, 0, 1, 2), numeric(rng, 60000, 0.05, 1, 2)))
    out.append(run("large_same", "numerical", numeric(rng, 50000, 0, 1, 2), numeric(rng, 60000, 0, 1, 2)))
    # Heavy tail with ties (trip distances): Wasserstein, histogram JS / PSI.
    heavy = lambda n, s: pd.Series(np.round(rng.lognormal(1.0 + s, 0.9, n), 2))
    out.append(run("heavy_tail", "numerical", heavy(3000, 0.0), heavy(2500, 0.1)))
    out.append(run("heavy_tail_small", "numerical", heavy(600, 0.0), heavy(800, 0.3)))
    # Few distinct values: JS (large) / chi-square / Z (small) on a numerical column.
    few = lambda n, p: pd.Series(rng.choice([1.0, 2.0, 3.0, 4.0], size=n, p=p))
    out.append(run("numeric_4_values_large", "numerical", few(5000, [0.4, 0.3, 0.2, 0.1]), few(3000, [0.3, 0.3, 0.3, 0.1])))
    out.append(run("numeric_4_values_small", "numerical", few(500, [0.4, 0.3, 0.2, 0.1]), few(700, [0.35, 0.3, 0.25, 0.1])))
    two = lambda n, p: pd.Series(rng.choice([0.0, 1.0], size=n, p=[1 - p, p]))
    out.append(run("numeric_binary_small", "numerical", two(400, 0.3), two(600, 0.36)))
    # 6..20 distinct reference values: value-count binning on a numerical column.
    twelve = lambda n, s: pd.Series(np.clip(np.round(rng.normal(6 + s, 2.5, n)), 0, 11).astype(float))
    out.append(run("numeric_12_values", "numerical", twelve(4000, 0.0), twelve(3500, 0.4)))
    # Constant reference: Wasserstein normalised by the 0.001 floor.
    out.append(run("constant_reference", "numerical", pd.Series([5.0] * 2000), numeric(rng, 1500, 5.0, 0.01, 3)))
    # Categorical, integer ids with categories on one side only (JS / PSI zero filling / chi-square inf).
    ids = np.arange(1, 201)
    weights = 1.0 / ids
    cat = lambda n, w: pd.Series(rng.choice(ids, size=n, p=w / w.sum()))
    w_cur = weights.copy()
    w_cur[:20] *= 1.5
    w_cur[150:] = 0.0
    out.append(run("categorical_large", "categorical", cat(3000, weights), cat(2500, w_cur)))
    small_w = np.where(ids <= 30, 1.0, 0.0)
    out.append(run("categorical_small", "categorical", cat(600, small_w), cat(900, small_w * np.linspace(1, 1.3, 200))))
    out.append(run("categorical_small_new_category", "categorical", cat(600, small_w), cat(900, np.where(ids <= 31, 1.0, 0.0))))
    # Binary categorical (strings): Z-test; identical single value: p = 1.
    yn = lambda n, p: pd.Series(rng.choice(["N", "Y"], size=n, p=[1 - p, p]))
    out.append(run("binary_strings", "categorical", yn(500, 0.2), yn(800, 0.26)))
    out.append(run("single_value", "categorical", pd.Series(["Y"] * 300), pd.Series(["Y"] * 200)))
    # String categories, large reference: JS.
    letters = np.array(list("ABCDEFGHIJKLMNOP"))
    st = lambda n, a: pd.Series(rng.choice(letters, size=n, p=rng.dirichlet(np.full(16, a))))
    out.append(run("string_categories", "categorical", st(4000, 5.0), st(3000, 5.0)))
    return out


def special():
    out = {}
    xs = sorted(set([0.0, 1e-8, 0.3, 0.7, 1.0, 1.4, 1.5, 2.0, 3.0, 5.0, 8.0, 10.0, 12.0, 20.0, 30.0, 37.0, 38.0]))
    xs = sorted(set(xs + [-x for x in xs]))
    out["ndtr"] = [[x, float(scipy.special.ndtr(x))] for x in xs]
    chi = []
    for df in [1, 2, 3, 4, 5, 9, 10, 29, 51, 100, 149, 150, 199, 250, 301, 500]:
        for factor in [0.01, 0.1, 0.5, 0.8, 0.95, 1.0, 1.05, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0, 50.0]:
            x = df * factor
            chi.append([df, x, float(scipy.special.chdtrc(df, x))])
    for x in [0.0, 1e-3, 1e4, 1e5]:
        chi.append([7, x, float(scipy.special.chdtrc(7, x))])
    out["chdtrc"] = chi
    ks = []
    for n in [1, 2, 3, 5, 10, 20, 50, 100, 139, 140, 141, 200, 500, 769, 1000, 5000, 27273, 100000, 100001, 250000]:
        for d in [1e-4, 1e-3, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.45, 0.5, 0.6, 0.9, 0.99]:
            for dd in [d, 0.4 / n, 0.9 / n, 1.5 / n, 3.0 / n, (n - 1.5) / n]:
                if 0 < dd < 1:
                    ks.append([n, dd, float(scipy.stats.kstwo.sf(dd, n))])
    out["kstwo_sf"] = ks
    sm = []
    for n in [2, 5, 10, 50, 141, 1000, 27273, 100000, 2000000]:
        for x in [1e-3, 0.01, 0.03, 0.05, 0.1, 0.2, 0.5, 0.8, 0.99, 1.0 / n, 0.5 / n, 1 - 1.0 / n, 1 - 0.5 / n]:
            if 0 <= x <= 1:
                sm.append([n, x, float(scipy.special.smirnov(n, x))])
    out["smirnov"] = sm
    return out


def main():
    json.dump(
        {
            "evidently": evidently.__version__,
            "scipy": scipy.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "special": special(),
            "cases": cases(),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
