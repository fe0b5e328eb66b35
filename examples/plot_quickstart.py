"""
==========
Quickstart
==========

Train a network on the digits dataset after flipping 30% of its training labels,
once plainly and once with :class:`~skrobust.RobustNetClassifier`'s default
row-level reweighting, and compare both with a network trained on the true labels.
"""

# %%
# Data with wrong labels
# ----------------------
# The digits dataset ships with scikit-learn: 1,797 images of 8x8 pixels,
# ten classes. We keep a clean test set and corrupt 30% of the training labels
# with :func:`skrobust.noise.add_label_noise`: each chosen row gets one of the
# nine other classes at random ("symmetric" noise). Because we flipped the
# labels ourselves, we know which rows are wrong.
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skrobust.noise import add_label_noise

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)
y_noisy = add_label_noise(y_train, 0.3, random_state=0)
print(f"{len(y_train)} training rows, {(y_noisy != y_train).sum()} labels flipped")

# %%
# Three fits of the same network
# ------------------------------
# :class:`~skrobust.RobustNetClassifier` is a scikit-learn classifier: it takes
# numpy arrays (or DataFrames), any label type, and fits in a pipeline. The
# default network is a two-layer perceptron sized from the data.
# ``weighting="none"`` trains it plainly through the same code, so the only
# difference between the second and third fit is the robust weighting.
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skrobust import RobustNetClassifier


def make_model(**params):
    net = RobustNetClassifier(max_epochs=30, random_state=0, verbose=0, **params)
    return make_pipeline(StandardScaler(), net)


fits = {
    "true labels, plain": make_model(weighting="none").fit(X_train, y_train),
    "30% flipped, plain": make_model(weighting="none").fit(X_train, y_noisy),
    "30% flipped, robust": make_model().fit(X_train, y_noisy),
}
scores = {name: pipe.score(X_test, y_test) for name, pipe in fits.items()}
for name, score in scores.items():
    print(f"{name:<22} test accuracy {score:.3f}")

# %%
# The test labels are clean, so the test accuracy measures how much of the
# true structure each network learned. The plain network fitted to the noisy
# labels memorises some of the wrong ones; the robust fit stops training on the
# rows it judges mislabeled once the 5 warm-up epochs are over.
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 2.6), layout="constrained")
bars = ax.barh(list(scores), list(scores.values()),
               color=["0.6", "tab:red", "tab:blue"])
ax.bar_label(bars, fmt="%.3f", padding=3)
ax.set_xlim(0.8, 1.0)
ax.invert_yaxis()
ax.set_xlabel("accuracy on the clean test set")
ax.set_title("digits, 2x128 MLP, 30 epochs")
plt.show()

# %%
# Training curves
# ---------------
# ``history_`` is skorch's record of the fit. Next to the training loss it has
# two columns added by skrobust: ``weight_mean``, the mean weight of the
# epoch's training samples, and ``weight_low``, the share of them whose weight
# fell below 0.5, here the share of rows left out of training.
robust = fits["30% flipped, robust"][-1]
plain = fits["30% flipped, plain"][-1]

fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3), layout="constrained")
left.plot(plain.history[:, "train_loss"], label="plain", color="tab:red")
left.plot(robust.history[:, "train_loss"], label="robust", color="tab:blue")
left.set_xlabel("epoch")
left.set_ylabel("training loss (noisy labels)")
left.legend()
right.plot(robust.history[:, "weight_low"], color="tab:blue")
right.axhline(0.3, color="0.5", linestyle="--", label="true noise rate")
right.set_xlabel("epoch")
right.set_ylabel("share of rows left out")
right.legend()
plt.show()

# %%
# The reported loss is the weighted loss of the step, so once rows are left
# out it only counts the rows still trained on. The share of rows left out
# settles a little below the true noise rate: the rule errs on the side of
# keeping a doubtful row. :ref:`sphx_glr_auto_examples_plot_find_label_issues.py`
# looks at which rows these are.
