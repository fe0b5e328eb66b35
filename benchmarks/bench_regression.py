"""Benchmark: RobustNetRegressor on real regression data with corrupted targets.

For each dataset (:mod:`regression_datasets`, all offline) and condition (clean
targets, 20% gross errors, 30% swapped targets, 30% heteroscedastic Gaussian
noise; :func:`skrobust.noise.add_target_noise`), the training targets are
corrupted, every method is fitted, and the R2 on the *clean* test targets, the
fit time and, for the robust nets, the ROC AUC of ``noise_scores_`` against the
corrupted rows are recorded. Fit times are CPU seconds of the (single-threaded)
fitting process, so that other work on the machine does not blur them.

Methods: ``plain`` (``RobustNetRegressor(weighting="none")``), ``defaults``
(``RobustNetRegressor()``), ``huber_net`` (plain training with
:class:`skrobust.losses.HuberLoss`), scikit-learn's ``HuberRegressor``,
``HistGradientBoostingRegressor`` with squared and absolute error, and
``MLPRegressor`` (128, 128; 50 epochs, batches of 128, as the nets).
Features are standardised for every method; the targets are left on their own
scale.

Targets of the defaults: clean cost (plain minus defaults on clean targets) at
most 0.005 R2 on average and 0.02 on every dataset; pooled gap closure (sum
of R2 gains over plain, over the sum of the gaps that corruption opens) at
least 70%; ``noise_scores_`` AUC at least 0.90 on average; fit time at most
1.0x plain.

Run from the repository root (about 10 minutes on 2 cores)::

    python benchmarks/bench_regression.py
    python benchmarks/bench_regression.py --datasets diabetes concrete --conditions gross

Results go to ``benchmarks/results/regression.csv`` and ``regression.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import HuberRegressor
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from regression_datasets import REGRESSION_DATASETS, load_regression_dataset  # noqa: E402

from skrobust import RobustNetRegressor  # noqa: E402
from skrobust.losses import HuberLoss  # noqa: E402
from skrobust.noise import add_target_noise  # noqa: E402

RESULTS = Path(__file__).parent / "results"

#: name -> (rate, kind) of add_target_noise; None: clean.
CONDITIONS = {
    "clean": None,
    "gross20": (0.2, "gross"),
    "swap30": (0.3, "swap"),
    "gaussian30": (0.3, "gaussian"),
}


def _net(**params):
    return RobustNetRegressor(verbose=0, **params)


METHODS = {
    "plain": lambda seed: _net(weighting="none", random_state=seed),
    "defaults": lambda seed: _net(random_state=seed),
    "huber_net": lambda seed: _net(weighting="none", criterion=HuberLoss, random_state=seed),
    "huber_linear": lambda seed: HuberRegressor(max_iter=1000),
    "hgb_squared": lambda seed: HistGradientBoostingRegressor(random_state=seed),
    "hgb_absolute": lambda seed: HistGradientBoostingRegressor(
        loss="absolute_error", random_state=seed),
    # the same network, epochs and batch size as the nets above
    "mlp_sklearn": lambda seed: MLPRegressor(hidden_layer_sizes=(128, 128), max_iter=50,
                                             batch_size=128, random_state=seed),
}


def run_one(dataset, condition, method, seed, max_rows):
    X, y = load_regression_dataset(dataset, max_rows=max_rows, random_state=seed)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, random_state=seed)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    mask = np.zeros(len(y_train), dtype=bool)
    if CONDITIONS[condition] is not None:
        rate, kind = CONDITIONS[condition]
        y_train, mask = add_target_noise(y_train, rate, kind=kind, random_state=seed,
                                         return_mask=True)
    model = METHODS[method](seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    # CPU time of this single-threaded process: what the fit costs, whatever else
    # runs on the machine (the wall time is kept too).
    fit_time, wall_time = time.process_time() - cpu_start, time.perf_counter() - start
    row = {"dataset": dataset, "condition": condition, "method": method, "seed": seed,
           "n_train": len(y_train), "r2": r2_score(y_test, model.predict(X_test)),
           "fit_time": fit_time, "wall_time": wall_time, "auc": np.nan, "flagged": np.nan,
           "precision": np.nan}
    if isinstance(model, RobustNetRegressor):
        flags = model.target_issues_
        row["flagged"] = flags.mean()
        if mask.any():
            row["auc"] = roc_auc_score(mask, model.noise_scores_)
            row["precision"] = mask[flags].mean() if flags.any() else np.nan
    return row


def run_task(dataset, condition, seed, methods, max_rows):
    """Every method on one (dataset, condition, seed), one thread."""
    torch.set_num_threads(1)
    # A first tiny fit pays the process's one-off costs (imports, torch's first
    # calls), which would otherwise be charged to whichever method runs first.
    rng = np.random.default_rng(0)
    _net(max_epochs=2, warmup_epochs=1).fit(rng.normal(size=(64, 3)), rng.normal(size=64))
    rows = []
    for method in methods:
        with threadpool_limits(1):
            row = run_one(dataset, condition, method, seed, max_rows)
        rows.append(row)
        print(f"{dataset:11s} {condition:11s} {method:13s} r2={row['r2']:.3f} "
              f"auc={row['auc']:.3f} flagged={row['flagged']:.3f} "
              f"t={row['fit_time']:.1f}s", flush=True)
    return rows


def summarize(df):
    """The targets' numbers from the per-fit table."""
    mean = df.groupby(["dataset", "condition", "method"])[["r2", "fit_time", "auc"]].mean()
    r2 = mean["r2"].unstack("method")
    lines = []
    clean = r2.xs("clean", level="condition")
    cost = clean["plain"] - clean["defaults"]
    lines.append(f"clean cost (plain - defaults), mean: {cost.mean():+.4f}; worst: "
                 f"{cost.max():+.4f} ({cost.idxmax()})")
    corrupted = r2.drop(index="clean", level="condition")
    gaps, gains = [], []
    for (dataset, _condition), values in corrupted.iterrows():
        gaps.append(clean.loc[dataset, "plain"] - values["plain"])
        gains.append(values["defaults"] - values["plain"])
    gaps, gains = np.array(gaps), np.array(gains)
    lines.append(f"pooled gap closure: {gains.sum() / gaps.sum():.1%} "
                 f"(gains {gains.sum():.3f} / gaps {gaps.sum():.3f})")
    auc = mean["auc"].xs("defaults", level="method").dropna()
    lines.append(f"noise_scores_ AUC, mean: {auc.mean():.3f}; worst: {auc.min():.3f} "
                 f"{auc.idxmin()}")
    by_condition = auc.groupby(level="condition").mean()
    lines.append("AUC by condition: " + ", ".join(
        f"{k} {v:.3f}" for k, v in by_condition.items()))
    times = df.groupby("method")["fit_time"].sum()
    lines.append(f"fit time, defaults / plain: {times['defaults'] / times['plain']:.2f}x")
    return "\n".join(lines), r2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(REGRESSION_DATASETS))
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-rows", type=int, default=1400)
    parser.add_argument("--out", default="regression")
    parser.add_argument("--jobs", type=int, default=2,
                        help="processes, each fitting one (dataset, condition) at a time")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    tasks = [(d, c, s) for d in args.datasets for c in args.conditions for s in args.seeds]
    results = Parallel(n_jobs=args.jobs)(
        delayed(run_task)(d, c, s, args.methods, args.max_rows) for d, c, s in tasks)
    rows = [row for task_rows in results for row in task_rows]
    df = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    df.to_csv(RESULTS / f"{args.out}.csv", index=False)
    print(f"total {time.perf_counter() - start:.0f}s")
    if {"plain", "defaults"} <= set(args.methods) and "clean" in args.conditions:
        summary, r2 = summarize(df)
        print(summary)
        table = r2.round(3).to_markdown() if _has_tabulate() else r2.round(3).to_string()
        (RESULTS / f"{args.out}.md").write_text(
            f"# Regression benchmark\n\n```\n{summary}\n```\n\nR2 on clean test targets:\n\n"
            f"{table}\n")


def _has_tabulate():
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
