"""
=====================================
Tune the weighting with a grid search
=====================================

:class:`~skrobust.RobustNetClassifier`'s parameters are ordinary scikit-learn
parameters, so :class:`~sklearn.model_selection.GridSearchCV` can search them.
The search below is kept tiny (a few candidates, 15 epochs) so that it runs in
seconds; the point is how to set it up, and one pitfall: the validation folds
carry the same noisy labels as the training folds.
"""

# %%
# Data: digits with 30% of the labels flipped
# -------------------------------------------
# We keep a clean test set to check the search's choice afterwards.
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skrobust.noise import add_label_noise

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y,
                                                    random_state=0)
y_noisy = add_label_noise(y_train, 0.3, random_state=0)

# %%
# The grid
# --------
# ``alpha``, ``beta`` and ``stats`` only matter for the batch rules
# ``"truncate"`` (``alpha``, ``beta``, ``stats``) and ``"soft"`` (``stats``),
# so a list of grids avoids fitting identical models many times. In a pipeline
# the parameters take the step's name as prefix.
import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skrobust import RobustNetClassifier

pipe = make_pipeline(
    StandardScaler(),
    RobustNetClassifier(max_epochs=15, warmup_epochs=3, random_state=0, verbose=0),
)
net = "robustnetclassifier__"
param_grid = [
    {net + "weighting": ["none", "adaptive"]},
    {net + "weighting": ["truncate"], net + "alpha": [1.0, 2.0],
     net + "beta": [np.inf, 2.0], net + "stats": ["mean_std", "median_iqr"]},
    {net + "weighting": ["soft"], net + "stats": ["mean_std", "median_iqr"]},
]
cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
search = GridSearchCV(pipe, param_grid, cv=cv, n_jobs=1)
search.fit(X_train, y_noisy)
print(f"{len(search.cv_results_['params'])} candidates; best:")
for name, value in search.best_params_.items():
    print(f"  {name} = {value!r}")

# %%
# ``n_jobs=1`` keeps this example light. With ``n_jobs`` above 1 the fits run in
# parallel processes; a fixed ``random_state`` gives the same result either way.
#
# Results
# -------
# The validation labels are noisy too, so the cross-validated accuracy is
# measured against partly wrong answers. For symmetric noise at rate
# :math:`r` with :math:`C` classes, a model with clean accuracy :math:`a` scores
# :math:`(1-r)\,a + r\,(1-a)/(C-1)` on average against the noisy labels: lower,
# but in the same order, so the ranking of candidates can still be trusted.
# For class-dependent noise this no longer holds; keep a small hand-checked
# validation set when you can.
import pandas as pd

results = pd.DataFrame(search.cv_results_)
table = pd.DataFrame({
    "weighting": results["param_" + net + "weighting"],
    "stats": results["param_" + net + "stats"].astype(object).fillna("-"),
    "alpha": results["param_" + net + "alpha"].astype(object).fillna("-"),
    "beta": results["param_" + net + "beta"].astype(object).fillna("-"),
    "cv accuracy (noisy labels)": results["mean_test_score"].round(3),
    "std": results["std_test_score"].round(3),
})
table = table.sort_values("cv accuracy (noisy labels)", ascending=False)
print(table.to_string(index=False))
table

# %%
# Check against the clean test set
# --------------------------------
# Here the true test labels are known, so we can refit every candidate on the
# whole noisy training set and see whether the search ranked them as the clean
# test set does. (On real data this check is not available.)
from sklearn.base import clone

clean_scores = [
    clone(pipe).set_params(**params).fit(X_train, y_noisy).score(X_test, y_test)
    for params in search.cv_results_["params"]
]
table["test accuracy (clean labels)"] = np.round(clean_scores, 3)[table.index]
print(f"chosen by the search: {search.score(X_test, y_test):.3f} on the clean test set")
table

# %%
import matplotlib.pyplot as plt

r, n_classes = 0.3, 10
a = np.linspace(0.85, 1.0, 10)
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for weighting, marker in (("none", "s"), ("adaptive", "*"), ("truncate", "o"),
                          ("soft", "^")):
    rows = table[table["weighting"] == weighting]
    ax.scatter(rows["test accuracy (clean labels)"], rows["cv accuracy (noisy labels)"],
               marker=marker, s=80 if marker == "*" else 40, label=weighting)
ax.plot(a, (1 - r) * a + r * (1 - a) / (n_classes - 1), color="0.6", linestyle="--",
        label="expected relation")
ax.set_xlabel("accuracy on the clean test set")
ax.set_ylabel("cross-validated accuracy\nagainst the noisy labels")
ax.legend()
plt.show()

# %%
# The points sit below the dashed line because each cross-validation model is
# trained on two thirds of the rows only. More important is their order. In
# this run every reweighting did better on the clean test set than plain
# training, yet the cross-validated scores against noisy labels put plain
# training in the middle of the pack. Against noisy labels every difference
# shrinks by the factor
# :math:`1 - r - r/(C-1)`, here 2/3, while the fold-to-fold noise does not:
# gaps of a point or two between candidates are below what three folds can
# resolve. Search over a few values at most, use repeated folds or several seeds
# when the table is small, and prefer the defaults when the search cannot
# separate the candidates. :doc:`/user_guide/choosing` summarises what is
# known about each setting.
