"""
Hyperparameter search on a Dask cluster
=======================================

:class:`~skrobust.RobustNetClassifier` is a scikit-learn estimator, so
:class:`~sklearn.model_selection.GridSearchCV` can send its fits to a Dask
cluster through joblib's ``"dask"`` backend, without any change to the
estimator or the search. Here the cluster is a
:class:`distributed.LocalCluster` of two worker processes on this machine; to
use a real cluster, pass its scheduler address to :class:`distributed.Client`
instead (see :doc:`/distributed`).

With a fixed ``random_state`` every fit is deterministic, so the search gives
the same scores wherever its fits run.

Worker processes are *spawned*: they import this script again, which is why
the work runs under ``if __name__ == "__main__":``.
"""

# %%
# Data, estimator and grid
# ------------------------
# Breast-cancer data with 20% of the labels flipped, a standardising pipeline,
# and a small grid over the truncation threshold and the learning rate.
import time

import joblib
import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skrobust import RobustNetClassifier
from skrobust.noise import add_label_noise

X, y = load_breast_cancer(return_X_y=True)
y_noisy = add_label_noise(y, 0.2, random_state=0)
pipeline = make_pipeline(
    StandardScaler(),
    RobustNetClassifier(weighting="truncate", warmup_epochs=2, max_epochs=10,
                        verbose=0, random_state=0),
)
grid = {
    "robustnetclassifier__alpha": [0.5, 1.0, 2.0],
    "robustnetclassifier__lr": [1e-3, 1e-2],
}


def search(**kwargs):
    """Run the grid search; return it and its wall time in seconds."""
    start = time.perf_counter()
    result = GridSearchCV(pipeline, grid, cv=3, **kwargs).fit(X, y_noisy)
    return result, time.perf_counter() - start


# %%
# The search, serially and on two Dask workers
# --------------------------------------------
# ``n_jobs=-1`` lets joblib submit every (candidate, fold) fit at once; inside
# ``joblib.parallel_backend("dask")`` they become Dask tasks. Dask starts each
# worker process with ``OMP_NUM_THREADS=1``, so torch uses one thread per
# worker and the two workers share the cores without oversubscription.


def main():
    from distributed import Client, LocalCluster

    serial, serial_time = search()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        # Import torch and skrobust in the workers once, outside the timing.
        client.run(lambda: __import__("skrobust"))
        print("torch threads per worker:",
              sorted(client.run(lambda: __import__("torch").get_num_threads()).values()))
        with joblib.parallel_backend("dask"):
            distributed_search, dask_time = search(n_jobs=-1)

    results = pd.DataFrame(distributed_search.cv_results_)[
        ["param_robustnetclassifier__alpha", "param_robustnetclassifier__lr",
         "mean_test_score", "std_test_score", "rank_test_score"]]
    print(results.to_string(index=False))
    print(f"best parameters: {distributed_search.best_params_}")
    same = np.array_equal(serial.cv_results_["mean_test_score"],
                          distributed_search.cv_results_["mean_test_score"])
    print(f"identical to the serial search: {same}")
    print(f"wall time: serial {serial_time:.1f} s, Dask (2 workers) {dask_time:.1f} s")


if __name__ == "__main__":
    main()
