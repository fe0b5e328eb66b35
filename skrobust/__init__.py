"""skrobust: noise-robust neural network training for tabular data.

A scikit-learn estimator built on skorch that down-weights samples whose
per-sample gradient norms stand out from their batch, so that partly wrong
labels hurt the model less.
"""

from .classifier import RobustNetClassifier
from .engines import per_sample_grad_norms
from .label_issues import CleanedClassifier, find_label_issues
from .regressor import RobustNetRegressor
from .weighting import compute_weights

__all__ = [
    "CleanedClassifier",
    "RobustNetClassifier",
    "RobustNetRegressor",
    "compute_weights",
    "find_label_issues",
    "per_sample_grad_norms",
]
__version__ = "0.1.0.dev0"
