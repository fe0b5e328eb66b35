"""
===========================================
Noise-robust losses as the criterion
===========================================

Reweighting samples is one way to resist wrong labels; changing the loss is
another. :mod:`skrobust.losses` holds losses designed to be less sensitive to
label noise, usable as the ``criterion`` of
:class:`~skrobust.RobustNetClassifier` (or of any skorch net). This example
compares the ordinary cross entropy with the generalized cross entropy and the
symmetric cross entropy on digits with 40% of the training labels flipped, with
and without the default reweighting.
"""

# %%
# Data
# ----
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skrobust.noise import add_label_noise

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y,
                                                    random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
y_noisy = add_label_noise(y_train, 0.4, random_state=0)

# %%
# The losses
# ----------
# With :math:`p_y` the predicted probability of the given label:
#
# * cross entropy, :math:`-\log p_y`: unbounded, so a confidently wrong label
#   produces a large loss and a large gradient, and the network bends towards it;
# * generalized cross entropy, :math:`(1 - p_y^q)/q`: bounded, between the cross
#   entropy (:math:`q \to 0`) and the mean absolute error (:math:`q = 1`);
# * symmetric cross entropy, :math:`-\alpha \log p_y + 4\beta(1 - p_y)`: a small
#   dose of cross entropy plus the bounded "reverse" cross entropy.
#
# Pass the criterion as a class and set its parameters with the ``criterion__``
# prefix; the classifier builds it with ``reduction="none"``, because it needs
# one loss per sample to compute per-sample gradients.
import torch

from skrobust import RobustNetClassifier
from skrobust.losses import GeneralizedCrossEntropy, SymmetricCrossEntropy

criteria = {
    "cross entropy": {"criterion": torch.nn.CrossEntropyLoss},
    "generalized CE (q=0.7)": {"criterion": GeneralizedCrossEntropy,
                               "criterion__q": 0.7},
    "symmetric CE": {"criterion": SymmetricCrossEntropy, "criterion__alpha": 0.1,
                     "criterion__beta": 1.0},
}
scores = {}
for name, params in criteria.items():
    for weighting in ("none", "adaptive"):
        net = RobustNetClassifier(weighting=weighting, max_epochs=30, random_state=0,
                                  verbose=0, **params)
        scores[name, weighting] = net.fit(X_train, y_noisy).score(X_test, y_test)
        print(f"{name:<24} weighting={weighting:<9} test accuracy "
              f"{scores[name, weighting]:.3f}")

# %%
import matplotlib.pyplot as plt
import numpy as np

fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
positions = np.arange(len(criteria))
for offset, weighting, color in ((-0.2, "none", "tab:red"),
                                 (0.2, "adaptive", "tab:blue")):
    values = [scores[name, weighting] for name in criteria]
    bars = ax.bar(positions + offset, values, width=0.4, color=color,
                  label=f'weighting="{weighting}"')
    ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
ax.set_xticks(positions, list(criteria))
ax.set_ylim(0.8, 1.0)
ax.set_ylabel("accuracy on the clean test set")
ax.set_title("digits, 40% of the training labels flipped")
ax.legend(loc="lower right")
plt.show()

# %%
# Reading the result
# ------------------
# With plain training, the bounded losses resist the flipped labels better than
# the cross entropy: a wrong label cannot pull without limit. The row-level
# reweighting helps every loss, and the two remedies combine: the reweighting
# removes most wrong rows from training, the bounded loss softens the pull of
# those it misses.
#
# Bounded losses learn more slowly, even from correct labels, and the best
# ``q`` or ``alpha``/``beta`` depend on the data; on a new dataset compare a
# couple of values (see :ref:`sphx_glr_auto_examples_plot_grid_search.py`).
#
# When the noise is class-dependent (some classes are systematically mistaken
# for others), a third option is to correct the loss with an estimate of the
# noise transition matrix: ``loss_correction="forward"`` estimates it during
# training, and :class:`~skrobust.losses.ForwardCorrectedCrossEntropy` takes a
# matrix you supply.
