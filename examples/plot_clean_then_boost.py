"""
===============================================
Find wrong labels, then train gradient boosting
===============================================

Gradient boosting is often the strongest model on tabular data, and it has no
defence against wrong labels: it fits them. Here we flip 30% of the labels of
the breast cancer data ourselves, so that we can check every step against the
truth, and then do what one would do on real data:

1. :func:`~skrobust.find_label_issues` scores every training row, and we review
   the most suspicious ones;
2. :class:`~skrobust.CleanedClassifier` drops the flagged rows and trains
   :class:`~sklearn.ensemble.HistGradientBoostingClassifier` on the rest, in one
   ``fit``.
"""

# %%
# Noisy labels
# ------------
# The labels are strings (``"malignant"`` and ``"benign"``); any label type
# works. The test labels stay clean: they measure what the models learned.
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from skrobust.noise import add_label_noise

data = load_breast_cancer(as_frame=True)
X = data.data
y = data.target_names[data.target]
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0)
y_noisy = add_label_noise(y_train, 0.3, random_state=0)
flipped = y_noisy != y_train
print(f"{flipped.sum()} of {len(y_train)} training labels flipped")

# %%
# Score every row
# ---------------
# The detector is a :class:`~skrobust.RobustNetClassifier`; the features are on
# very different scales, so it gets a :class:`~sklearn.preprocessing.StandardScaler`
# first. :func:`~skrobust.find_label_issues` fits it once and returns one row
# per training row, indexed like ``X_train``.
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skrobust import RobustNetClassifier, find_label_issues

detector = make_pipeline(StandardScaler(), RobustNetClassifier(random_state=0, verbose=0))
issues = find_label_issues(X_train, y_noisy, estimator=detector)
issues.head()

# %%
# Review the most suspicious rows
# -------------------------------
# Sort by ``noise_score`` and put the rows in front of someone who can tell,
# with the features they need. Here we can add the truth as a column.
review = (
    issues.join(X_train[["mean radius", "mean concave points", "worst area"]])
    .assign(really_flipped=flipped)
    .sort_values("noise_score", ascending=False)
)
review.head(10)

# %%
# How good is the list? The share of flipped rows among the top of the
# ranking, and how many rows ``is_label_issue`` flags, and how many of those
# were flipped:
top = review.head(40)
print(f"{top['really_flipped'].sum()} of the 40 top-scored rows were flipped")
flags = issues["is_label_issue"].to_numpy()
print(f"is_label_issue flags {flags.sum()} rows, {(flags & flipped).sum()} of them flipped; "
      f"{flipped.sum()} rows were flipped in all")

# %%
# Clean, then boost
# -----------------
# :class:`~skrobust.CleanedClassifier` does the same detection inside ``fit``
# and trains a clone of the estimator on the rows that are not flagged; its
# ``predict``, ``predict_proba`` and ``score`` are the estimator's. With
# ``action="downweight"`` the flagged rows stay, with a small
# ``sample_weight`` instead. With ``select=0.25`` it ignores the detector's
# flags and leaves out the quarter of the rows with the highest
# ``noise_score``: for when a review of the top rows gave an estimate of the
# noise rate.
from sklearn.ensemble import HistGradientBoostingClassifier

from skrobust import CleanedClassifier

models = {
    "HGB on the noisy labels": HistGradientBoostingClassifier(random_state=0),
    "CleanedClassifier(HGB), drop": CleanedClassifier(
        HistGradientBoostingClassifier(random_state=0), detector=detector),
    "CleanedClassifier(HGB), downweight": CleanedClassifier(
        HistGradientBoostingClassifier(random_state=0), detector=detector,
        action="downweight"),
    "CleanedClassifier(HGB), select=0.25": CleanedClassifier(
        HistGradientBoostingClassifier(random_state=0), detector=detector, select=0.25),
}
scores = {}
for name, model in models.items():
    model.fit(X_train, y_noisy)
    scores[name] = model.score(X_test, y_test)
scores["HGB on the true labels"] = (
    HistGradientBoostingClassifier(random_state=0).fit(X_train, y_train).score(X_test, y_test))

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6.5, 3), layout="constrained")
names = list(scores)
ax.barh(names, [100 * scores[n] for n in names],
        color=["tab:gray", "tab:blue", "tab:cyan", "tab:purple", "tab:green"])
for i, n in enumerate(names):
    ax.text(100 * scores[n] - 1, i, f"{100 * scores[n]:.1f}", va="center", ha="right",
            color="white")
ax.set_xlim(50, 100)
ax.invert_yaxis()
ax.set_xlabel("accuracy on the clean test labels (%)")
plt.show()

# %%
# A fitted :class:`~skrobust.CleanedClassifier` keeps the fitted detector
# (``detector_``) and the rows it left out (``label_issues_``), so a review can
# also start from it:
for name in ("CleanedClassifier(HGB), drop", "CleanedClassifier(HGB), select=0.25"):
    left_out = models[name].label_issues_
    print(f"{name}: {left_out.sum()} rows left out, {(left_out & flipped).sum()} of them "
          "flipped")

# %%
# The detector's ``label_issues_`` are conservative by design: they must leave
# clean data alone, so under heavy noise they may flag few of the flipped rows,
# and then ``"drop"`` and ``"downweight"`` change little. The ranking by
# ``noise_score`` holds up better, which is why ``select`` can pick the rows
# from it when the noise rate is known or estimated.
#
# On real data
# ------------
# * Review before deleting: a row the detector cannot fit for another reason
#   (a rare subgroup, an outlier) also scores high.
# * :ref:`user_guide_label_issues` shows what cleaning gained and cost in the
#   benchmark, on clean labels too, and how to tune the detector with
#   ``detector__*`` parameters in a grid search.
