"""
==================================
How the weights evolve in training
==================================

Every epoch, :class:`~skrobust.RobustNetClassifier` records two numbers in its
``history_``: ``weight_mean``, the mean weight of the training samples, and
``weight_low``, the share of samples whose weight fell below 0.5. Following them
over the epochs shows what each weighting rule does, and why the default rule
judges rows rather than batches.
"""

# %%
# Two versions of the same training set
# -------------------------------------
# Digits, once with its true labels and once with 30% of them flipped.
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skrobust.noise import add_label_noise

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y,
                                                    random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
labels = {
    "true labels": y_train,
    "30% flipped": add_label_noise(y_train, 0.3, random_state=0),
}

# %%
# Three rules, two label sets
# ---------------------------
# ``"truncate"`` drops, in every batch, the samples whose gradient norm is more
# than ``alpha`` standard deviations above the batch mean; ``"soft"`` weights
# every sample by a Gaussian of its distance to the batch mean; ``"adaptive"``
# (the default) first asks held-out rows whether leaving rows out (or stopping
# early) beats plain training, and only then leaves out the rows that its
# per-row memory judges mislabeled (``net.adaptive_recipe_`` says what it
# chose). All three train plainly for the first ``warmup_epochs=5`` epochs.
from skrobust import RobustNetClassifier

rules = ("truncate", "soft", "adaptive")
nets = {}
for name, y_fit in labels.items():
    for rule in rules:
        net = RobustNetClassifier(weighting=rule, max_epochs=30, random_state=0,
                                  verbose=0)
        nets[name, rule] = net.fit(X_train, y_fit)
        print(f"{name:<12} {rule:<9} test accuracy {net.score(X_test, y_test):.3f}")

# %%
# The history is a skorch :class:`~skorch.history.History`;
# ``net.history[:, "weight_low"]`` is the column over all epochs.
import matplotlib.pyplot as plt

fig, axes = plt.subplots(2, 2, figsize=(8.5, 5.5), sharex=True, sharey="row",
                         layout="constrained")
colors = {"truncate": "tab:orange", "soft": "tab:green", "adaptive": "tab:blue"}
for col, name in enumerate(labels):
    for rule in rules:
        history = nets[name, rule].history
        epochs = history[:, "epoch"]
        for row, column in enumerate(("weight_mean", "weight_low")):
            axes[row, col].plot(epochs, history[:, column], color=colors[rule],
                                label=rule)
    axes[0, col].set_title(name)
    axes[1, col].set_xlabel("epoch")
    axes[1, col].axhline(0.3 if name == "30% flipped" else 0.0, color="0.5",
                         linestyle="--", linewidth=1)
axes[0, 0].set_ylabel("weight_mean")
axes[1, 0].set_ylabel("weight_low")
axes[0, 0].legend()
plt.show()

# %%
# What the curves say
# -------------------
# * The batch rules down-weight part of every batch even when no label is wrong:
#   a batch always has a spread of gradient norms, and the cut sits a fixed
#   number of standard deviations from its centre. On the true labels that is
#   training data thrown away for nothing. On the noisy labels they leave out
#   less than the true noise rate (dashed line): how much they drop depends on
#   the shape of each batch's norm distribution, not on how many labels are
#   wrong.
# * ``"adaptive"`` leaves out nothing when its self-check keeps plain training
#   (what held-out rows support on clean labels). When the self-check chose
#   row selection, it leaves out a share that follows the noise rate: its
#   thresholds come from the data, not from a fixed number of spreads. When it
#   chose to stop early, its curves end before the others.
#
# This is the measured reason for the default; :doc:`/user_guide/adaptive`
# explains the rule.
#
# Which rows are left out?
# ------------------------
# With ``weighting="adaptive"``, the rows left out at the end of training are
# ``label_issues_``. Compare them with the rows we flipped:
import numpy as np

net = nets["30% flipped", "adaptive"]
flipped = labels["30% flipped"] != y_train
issues = net.label_issues_
print(f"left out: {issues.sum()} rows; {np.sum(issues & flipped)} flipped, "
      f"{np.sum(issues & ~flipped)} correct")
clean_flags = nets["true labels", "adaptive"].label_issues_
print(f"flagged on the true labels: {clean_flags.sum()} rows")
