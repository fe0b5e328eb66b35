"""
=======================================
Find the mislabeled rows after training
=======================================

After ``fit``, :class:`~skrobust.RobustNetClassifier` scores every training row:
``noise_scores_`` (higher means more likely mislabeled) and ``label_issues_``
(a yes/no flag). Here we flip 20% of the digits labels ourselves, so we can check
the scores against the truth, then use them the way one would on real data:
look at the most suspicious rows, and refit without the flagged ones.
"""

# %%
# Fit on noisy labels
# -------------------
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skrobust import RobustNetClassifier
from skrobust.noise import add_label_noise

digits = load_digits()
X_train, X_test, y_train, y_test, img_train, _ = train_test_split(
    digits.data, digits.target, digits.images, test_size=0.3, stratify=digits.target,
    random_state=0,
)
y_noisy = add_label_noise(y_train, 0.2, random_state=1)
flipped = y_noisy != y_train

net = RobustNetClassifier(max_epochs=30, random_state=0, verbose=0)
pipe = make_pipeline(StandardScaler(), net)
pipe.fit(X_train, y_noisy)
scores, issues = net.noise_scores_, net.label_issues_
print(f"{flipped.sum()} rows flipped, {issues.sum()} flagged, "
      f"{(issues & flipped).sum()} of them flipped")

# %%
# Both attributes have one entry per row of the ``X`` passed to ``fit``, in the
# same order, so they index the training data directly (here ``X_train``; in a
# pipeline the rows do not move). ``noise_scores_`` is the norm of the output
# gradient ``p - e_y`` at the row's prediction averaged over the epochs;
# ``label_issues_`` marks the rows whose averaged prediction confidently names
# another class, gives their label less than 1/K, *and* whose gradient norm is
# above its batch's median; with the default ``weighting="adaptive"``, only
# when its held-out self-check found signs of label noise.
#
# How well do the scores rank the flipped rows?
# ----------------------------------------------
# The ROC curve compares the ranking by ``noise_scores_`` with the truth; the
# flag ``label_issues_`` is a single point on the same axes.
import matplotlib.pyplot as plt
from sklearn.metrics import RocCurveDisplay, precision_score, recall_score

fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
RocCurveDisplay.from_predictions(flipped, scores, name="noise_scores_", ax=ax,
                                 plot_chance_level=True)
ax.plot((issues & ~flipped).sum() / (~flipped).sum(),  # correct rows flagged
        (issues & flipped).sum() / flipped.sum(),  # flipped rows found
        "o", color="tab:red", label="label_issues_")
ax.set_xlabel("share of correct rows flagged")
ax.set_ylabel("share of flipped rows found")
ax.legend(loc="lower right")
plt.show()

print(f"label_issues_: precision {precision_score(flipped, issues):.2f}, "
      f"recall {recall_score(flipped, issues):.2f}")

# %%
# On digits with symmetric noise the ranking is close to perfect. Real label
# errors are harder to find, since they tend to sit on ambiguous rows:
# :ref:`user_guide_label_issues` quotes the ranges measured on other datasets.
#
# The flag is conservative: most flagged rows are wrong, and a minority of the
# wrong rows escape it. The score ranks more of them near the top; the flag is
# what the default ``weighting="adaptive"`` leaves out of training when its
# self-check chose row selection.
#
# Look at the most suspicious rows
# --------------------------------
# On real data there is no ground truth: one reviews the top of the ranking.
# Below, the twelve highest-scored training images with their given label and
# the network's prediction (in red when the given label was indeed wrong).
import numpy as np

top = np.argsort(-scores)[:12]
predicted = pipe.predict(X_train[top])
fig, axes = plt.subplots(2, 6, figsize=(8, 3.4), layout="constrained")
for ax, row, pred in zip(axes.flat, top, predicted):
    ax.imshow(img_train[row], cmap="gray_r")
    ax.set_title(f"given {y_noisy[row]}, pred {pred}", fontsize=9,
                 color="tab:red" if flipped[row] else "black")
    ax.set_axis_off()
plt.show()

# %%
# Act on the flags
# ----------------
# Three common moves, from the most to the least work:
#
# * **relabel**: have someone check the flagged rows (start from the highest
#   scores) and fix the labels, then refit;
# * **drop and refit**: remove the flagged rows and train any model on the rest;
# * **keep the robust fit**: it has already left those rows out of training.
#
# Here is the second move with a plain network, compared with a plain network on
# all the noisy rows and with the robust fit itself.
from sklearn.base import clone

plain = clone(pipe).set_params(robustnetclassifier__weighting="none")
results = {
    "plain, all rows": clone(plain).fit(X_train, y_noisy).score(X_test, y_test),
    "plain, flagged rows dropped": clone(plain).fit(X_train[~issues], y_noisy[~issues])
    .score(X_test, y_test),
    "robust fit": pipe.score(X_test, y_test),
}
for name, acc in results.items():
    print(f"{name:<28} test accuracy {acc:.3f}")
