"""Reporting helpers of ``bench_accuracy.py``: markdown tables and the plot.

Every function takes the raw result rows as a :class:`pandas.DataFrame` with
columns ``dataset, condition, seed, method, accuracy, fit_seconds, noise_auc``
(``accuracy`` as a fraction; ``noise_auc`` NaN where it does not apply).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "accuracy_table",
    "auc_by_condition_table",
    "auc_table",
    "format_markdown",
    "plot_accuracy",
    "summary_numbers",
    "summary_table",
]


def _fmt(mean, std=np.nan, count=1, digits=1):
    if mean is None or not np.isfinite(mean):
        return "n/a"
    if count > 1 and np.isfinite(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def _markdown(df, index_names):
    """A DataFrame of strings as a GitHub markdown table (index columns first)."""
    df = df.reset_index()
    header = [*index_names, *df.columns[len(index_names):]]
    lines = ["| " + " | ".join(map(str, header)) + " |",
             "|" + "|".join(["---"] * len(index_names)
                            + ["---:"] * (len(header) - len(index_names))) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)


def _ordered(values, order):
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + [v for v in present if v not in order]


def accuracy_table(rows, conditions, methods):
    """Table (a): test accuracy (%) mean ± std over seeds, dataset x condition x method."""
    ok = rows.dropna(subset=["accuracy"])
    grouped = ok.groupby(["dataset", "condition", "method"])["accuracy"]
    stats = grouped.agg(["mean", "std", "count"]) * [100, 100, 1]
    cells = {}
    for (dataset, condition, method), s in stats.iterrows():
        cells[(dataset, condition, method)] = _fmt(s["mean"], s["std"], int(s["count"]))
    datasets = list(dict.fromkeys(rows["dataset"]))
    conds = _ordered(rows["condition"], conditions)
    meths = _ordered(rows["method"], methods)
    records = []
    for dataset in datasets:
        for condition in conds:
            if not ((rows["dataset"] == dataset) & (rows["condition"] == condition)).any():
                continue
            records.append({"dataset": dataset, "condition": condition,
                            **{m: cells.get((dataset, condition, m), "n/a") for m in meths}})
    table = pd.DataFrame(records).set_index(["dataset", "condition"])
    return _markdown(table, ["dataset", "condition"])


def summary_numbers(rows, baseline="plain"):
    """Table (b) as numbers, one row per method (accuracy in %, gains in points)."""
    ok = rows.dropna(subset=["accuracy"]).copy()
    ok["accuracy"] *= 100
    ok["is_clean"] = ok["condition"] == "clean"
    key = ["dataset", "condition", "seed"]
    base = ok[ok["method"] == baseline].set_index(key)
    out = []
    for method in list(dict.fromkeys(ok["method"])):
        m = ok[ok["method"] == method].set_index(key)
        rec = {"method": method,
               "acc_clean": m.loc[m["is_clean"], "accuracy"].mean(),
               "acc_noisy": m.loc[~m["is_clean"], "accuracy"].mean(),
               "gain_clean": np.nan, "gain_noisy": np.nan, "gap_recovered": np.nan,
               "time_rel": np.nan}
        common = m.index.intersection(base.index)
        if len(common):
            mc, bc = m.loc[common], base.loc[common]
            gain = mc["accuracy"] - bc["accuracy"]
            clean = mc["is_clean"].to_numpy()
            rec["gain_clean"] = gain[clean].mean() if clean.any() else np.nan
            rec["gain_noisy"] = gain[~clean].mean() if (~clean).any() else np.nan
            # The gap plain loses to noise, on the datasets x seeds where the
            # method ran both clean and noisy (aggregated before dividing).
            plain_clean = bc.loc[clean, "accuracy"].mean() if clean.any() else np.nan
            plain_noisy = bc.loc[~clean, "accuracy"].mean() if (~clean).any() else np.nan
            gap = plain_clean - plain_noisy
            if np.isfinite(gap) and abs(gap) > 1e-9:
                rec["gap_recovered"] = rec["gain_noisy"] / gap
            rec["time_rel"] = mc["fit_seconds"].sum() / bc["fit_seconds"].sum()
        out.append(rec)
    return pd.DataFrame(out).set_index("method")


def summary_table(rows, methods, baseline="plain"):
    """Table (b) as markdown."""
    num = summary_numbers(rows, baseline=baseline)
    num = num.loc[_ordered(num.index, methods)]
    table = pd.DataFrame({
        "acc clean (%)": num["acc_clean"].map(_fmt),
        "acc noisy (%)": num["acc_noisy"].map(_fmt),
        f"gain vs {baseline}, clean (pts)": num["gain_clean"].map(
            lambda v: "n/a" if not np.isfinite(v) else f"{v:+.1f}"),
        f"gain vs {baseline}, noisy (pts)": num["gain_noisy"].map(
            lambda v: "n/a" if not np.isfinite(v) else f"{v:+.1f}"),
        "gap recovered": num["gap_recovered"].map(
            lambda v: "n/a" if not np.isfinite(v) else f"{100 * v:+.0f}%"),
        f"fit time / {baseline}": num["time_rel"].map(
            lambda v: "n/a" if not np.isfinite(v) else f"{v:.2f}x"),
    }, index=num.index)
    return _markdown(table, ["method"])


def auc_table(rows, methods, column="noise_auc"):
    """Table (c): noise-score ROC AUC per dataset (mean ± std over conditions and seeds)."""
    ok = rows.dropna(subset=[column])
    if ok.empty:
        return None
    meths = _ordered(ok["method"], methods)
    records = []
    for dataset, d in ok.groupby("dataset", sort=False):
        rec = {"dataset": dataset}
        for m in meths:
            v = d.loc[d["method"] == m, column]
            rec[m] = _fmt(v.mean(), v.std(), len(v), digits=3) if len(v) else "n/a"
        records.append(rec)
    v = ok.groupby("method")[column]
    rec = {"dataset": "**mean**"}
    for m in meths:
        rec[m] = _fmt(v.mean().get(m, np.nan), digits=3)
    records.append(rec)
    return _markdown(pd.DataFrame(records).set_index("dataset"), ["dataset"])


def auc_by_condition_table(rows, conditions, methods, column="noise_auc"):
    """Noise-score ROC AUC per condition, averaged over datasets and seeds."""
    ok = rows.dropna(subset=[column])
    if ok.empty:
        return None
    meths = _ordered(ok["method"], methods)
    stats = ok.groupby(["condition", "method"])[column].mean().unstack("method")
    stats = stats.reindex(columns=meths)
    stats = stats.loc[_ordered(stats.index, conditions)]
    return _markdown(stats.map(lambda v: _fmt(v, digits=3)), ["condition"])


def format_markdown(rows, conditions, methods, header_lines=()):
    """The whole report: settings, tables (a), (b), (c)."""
    parts = ["# Accuracy under label and input noise", "", *header_lines, ""]
    parts += ["## (a) Test accuracy (%), mean ± std over seeds", "",
              accuracy_table(rows, conditions, methods), ""]
    parts += ["## (b) Summary per method", "",
              "Noisy = every condition but `clean` (averaged over datasets, conditions "
              "and seeds). On 2-class datasets symmetric and pair noise are the same "
              "flips. Gains are paired with `plain` on the same dataset, condition "
              "and seed. Gap recovered = noisy gain over plain / (plain clean - plain "
              "noisy). Fit time relative to plain = ratio of total fit times.", "",
              summary_table(rows, methods), ""]
    auc = auc_table(rows, methods, "noise_auc")
    parts += ["## (c) Noise-score ROC AUC against the flipped training rows", "",
              "Label-noise conditions only; mean ± std over conditions and seeds.", ""]
    parts += [auc if auc else "_No method with noise scores ran on a label-noise condition._",
              ""]
    by_cond = auc_by_condition_table(rows, conditions, methods, "noise_auc")
    if by_cond:
        parts += ["### Noise-score ROC AUC per condition (mean over datasets and seeds)", "",
                  by_cond, ""]
    corrupt = auc_table(rows, methods, "corrupt_auc")
    if corrupt:
        parts += ["### Noise-score ROC AUC against the feature-corrupted rows (`features20`)",
                  "", corrupt, ""]
    errors = rows[rows["error"].fillna("") != ""]
    if len(errors):
        parts += ["## Failed runs", ""]
        parts += [f"- {r.dataset} / {r.condition} / seed {r.seed} / {r.method}: {r.error}"
                  for r in errors.itertuples()]
        parts.append("")
    return "\n".join(parts)


def plot_accuracy(rows, conditions, methods, path):
    """Accuracy vs condition per method, averaged over datasets (and seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = rows.dropna(subset=["accuracy"])
    per_dataset = ok.groupby(["method", "condition", "dataset"])["accuracy"].mean()
    mean = per_dataset.groupby(["method", "condition"]).mean().unstack("condition") * 100
    conds = _ordered(ok["condition"], conditions)
    mean = mean.reindex(columns=conds)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(conds) + 2), 4.5))
    x = np.arange(len(conds))
    for method in _ordered(mean.index, methods):
        ax.plot(x, mean.loc[method].to_numpy(), marker="o", label=method)
    ax.set_xticks(x)
    ax.set_xticklabels(conds, rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%), mean over datasets")
    ax.set_title(f"Accuracy by condition ({ok['dataset'].nunique()} datasets)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
