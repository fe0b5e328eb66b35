"""
=============================================
Find and survive corrupted regression targets
=============================================

Recording errors, unit mix-ups and rows joined to the wrong record leave some
regression targets far from the truth. Squared error lets those rows pull the
network hard. :class:`~skrobust.RobustNetRegressor` scores every training row
by how far its residual stands out (``noise_scores_``), flags the outliers
(``target_issues_``) and, by default, leaves the flagged rows out of training.

Here we corrupt 20% of the diabetes targets ourselves, so the flags can be
checked against the truth.
"""

# %%
# Corrupt the training targets
# ----------------------------
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skrobust import RobustNetRegressor
from skrobust.noise import add_target_noise

X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
y_noisy, corrupted = add_target_noise(y_train, 0.2, kind="gross", random_state=0,
                                      return_mask=True)
print(f"{corrupted.sum()} of {len(y_train)} training targets moved by 3 to 6 spreads")

# %%
# Fit a plain network and the default one
# ---------------------------------------
# ``weighting="none"`` trains plainly through the same code path. The targets
# stay on their own scale (tens to hundreds): the regressor standardises them
# with their median and interquartile range, which the corrupted rows cannot
# drag, and maps the predictions back.
plain = make_pipeline(StandardScaler(),
                      RobustNetRegressor(weighting="none", random_state=0, verbose=0))
robust_net = RobustNetRegressor(random_state=0, verbose=0)
robust = make_pipeline(StandardScaler(), robust_net)
for name, model in [("plain", plain), ("default", robust)]:
    model.fit(X_train, y_noisy)
    print(f"{name:8s} R2 on clean test targets: {model.score(X_test, y_test):.3f}")

# %%
# Which rows were flagged?
# ------------------------
# ``noise_scores_`` is each row's running-average residual in robust standard
# deviations of all the residuals; ``target_issues_`` marks the rows above 3
# (whose gradient norm is also above the batch median), the rows the default
# rule left out.
from sklearn.metrics import roc_auc_score

scores, flags = robust_net.noise_scores_, robust_net.target_issues_
print(f"ROC AUC of noise_scores_: {roc_auc_score(corrupted, scores):.3f}")
print(f"flagged {flags.sum()}: {(flags & corrupted).sum()} corrupted, "
      f"{(flags & ~corrupted).sum()} clean; corrupted rows missed: "
      f"{(corrupted & ~flags).sum()}")

# %%
# The given targets against the network's predictions: the corrupted rows lie
# far from the diagonal, and the histogram of the scores separates them.
import matplotlib.pyplot as plt

pred = robust.predict(X_train)
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
left.scatter(pred[~corrupted], y_noisy[~corrupted], s=12, c="tab:blue", label="clean")
left.scatter(pred[corrupted], y_noisy[corrupted], s=12, c="tab:red", label="corrupted")
left.scatter(pred[flags], y_noisy[flags], s=60, facecolors="none", edgecolors="k",
             label="flagged")
lims = [min(pred.min(), y_noisy.min()), max(pred.max(), y_noisy.max())]
left.plot(lims, lims, c="gray", lw=1)
left.set(xlabel="prediction", ylabel="given target", title="Training rows")
left.legend()
bins = np.linspace(0, np.nanmax(scores), 40)
right.hist(scores[~corrupted], bins=bins, alpha=0.7, label="clean")
right.hist(scores[corrupted], bins=bins, alpha=0.7, label="corrupted", color="tab:red")
right.axvline(3.0, c="k", ls="--", label="threshold")
right.set(xlabel="noise_scores_", ylabel="rows", title="Residual scores")
right.legend()
fig.tight_layout()
plt.show()
