"""Beyond one process: a Dask-backed grid search, and data-parallel training.

The Dask test starts a LocalCluster of two worker processes; the data-parallel
test spawns two CPU processes that talk through torch.distributed (gloo) on
127.0.0.1. Both skip when their optional packages are missing.
"""

import os
import time

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from skorch.callbacks import Callback

from skrobust import RobustNetClassifier
from skrobust.distributed import (
    ShardedBatchLoader,
    gather_columns,
    gather_norms,
    limit_torch_threads,
    process_group_info,
)

# One global batch for the data-parallel test: 2 processes x 32 rows.
_N_ROWS = 64
_STEP_PARAMS = dict(
    weighting="truncate", warmup_epochs=0, max_epochs=1, batch_size=_N_ROWS,
    module__hidden_layer_sizes=(16,), random_state=0, verbose=0,
)


class _RecordStep(Callback):
    """Keep the weights and norms of every training batch."""

    def initialize(self):
        self.weights, self.norms = [], []
        return self

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if training:
            self.weights.append(kwargs["weights"].detach().clone())
            self.norms.append(kwargs["norms"].detach().clone())


def _step_data():
    X, y = make_classification(n_samples=_N_ROWS, n_features=6, n_informative=4,
                               n_classes=3, random_state=1)
    y[:8] = (y[:8] + 1) % 3  # a few wrong labels, so the truncation has work to do
    sample_weight = np.random.default_rng(0).uniform(0.5, 1.5, _N_ROWS)
    return X.astype(np.float32), y, sample_weight


_ODD_PARAMS = dict(_STEP_PARAMS, batch_size=32, max_epochs=2, weighting="soft")


def _odd_data():
    X, y = make_classification(n_samples=71, n_features=6, n_informative=4,
                               n_classes=3, random_state=2)
    return X.astype(np.float32), y


def _outcome(net, recorder):
    module = net.module_
    return {
        "weights": torch.cat(recorder.weights),
        "norms": torch.cat(recorder.norms),
        "grads": {k: p.grad.detach().clone() for k, p in module.named_parameters()},
        "params": {k: p.detach().clone() for k, p in module.named_parameters()},
        "noise_scores": torch.as_tensor(net.noise_scores_),
        "weight_mean": float(net.history[-1, "weight_mean"]),
        "train_loss": float(net.history[-1, "train_loss"]),
    }


def _two_process_worker(rank, world_size, out_dir):
    """One of the data-parallel processes (spawned; must be importable)."""
    # What torchrun would set; accelerate reads it to choose gloo on CPU.
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    # Rendezvous through a file rather than a TCP port: no race for a free port.
    # accelerate keeps a process group that is already initialised.
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{os.path.join(out_dir, 'rendezvous')}",
        rank=rank, world_size=world_size)
    from accelerate import Accelerator

    from skrobust.distributed import AcceleratedRobustNetClassifier

    X, y, sample_weight = _step_data()
    accelerator = Accelerator(cpu=True)
    assert process_group_info() == (world_size, rank)
    recorder = _RecordStep()
    net = AcceleratedRobustNetClassifier(
        accelerator=accelerator, callbacks=[("record", recorder)], **_STEP_PARAMS)
    net.fit(X, y, sample_weight=sample_weight)
    result = _outcome(net, recorder)
    result["batch_rows"] = len(result["norms"])
    result["proba"] = torch.as_tensor(net.predict_proba(X))

    # Uneven shares: 71 rows in global batches of 32, 32 and 7 (4 + 3 rows),
    # and predictions sharded too, then gathered.
    X_odd, y_odd = _odd_data()
    odd = AcceleratedRobustNetClassifier(
        accelerator=accelerator, iterator_valid=ShardedBatchLoader,
        **_ODD_PARAMS).fit(X_odd, y_odd)
    result["odd_proba"] = torch.as_tensor(odd.predict_proba(X_odd))
    result["odd_noise_scores"] = torch.as_tensor(odd.noise_scores_)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


# --------------------------------------------------------------------- helpers
def test_gather_without_process_group_is_identity():
    norms = torch.tensor([1.0, 2.0, 3.0])
    everyone, local = gather_norms(norms)
    assert torch.equal(everyone, norms) and local == slice(0, 3)
    (a, b), local = gather_columns([norms, torch.arange(3)])
    assert b.dtype == torch.int64 and local == slice(0, 3)
    with pytest.raises(ValueError, match="same first dimension"):
        gather_columns([norms, torch.arange(4)])
    assert process_group_info() == (1, 0)


def test_sharded_loader_single_process_is_batch_loader():
    from skrobust.data import BatchLoader, RowIndexedDataset

    data = RowIndexedDataset(torch.arange(10.0).reshape(10, 1), torch.arange(10))
    kwargs = dict(batch_size=4, shuffle=True)
    sharded = ShardedBatchLoader(data, generator=torch.Generator().manual_seed(0), **kwargs)
    plain = BatchLoader(data, generator=torch.Generator().manual_seed(0), **kwargs)
    assert len(sharded) == len(plain) == 3
    for a, b in zip(sharded, plain):
        assert torch.equal(a.rows, b.rows) and torch.equal(a[0], b[0])


def test_limit_torch_threads():
    before = torch.get_num_threads()
    try:
        assert limit_torch_threads(1) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        limit_torch_threads(0)


# ------------------------------------------------------------------------ dask
def test_dask_grid_search_matches_serial():
    pytest.importorskip("dask", reason="the Dask search needs dask (pip install dask)")
    distributed = pytest.importorskip(
        "distributed", reason="the Dask search needs distributed (pip install distributed)")
    import joblib
    from sklearn.model_selection import GridSearchCV

    X, y = make_classification(n_samples=150, n_features=8, n_informative=5,
                               n_classes=3, random_state=0)
    estimator = RobustNetClassifier(max_epochs=3, batch_size=32, verbose=0, random_state=0,
                                    warmup_epochs=1, module__hidden_layer_sizes=(16,))
    grid = {"weighting": ["truncate", "adaptive"], "lr": [1e-3, 1e-2]}
    serial = GridSearchCV(estimator, grid, cv=3).fit(X, y)

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        # Dask's nanny starts workers with OMP_NUM_THREADS=1: one torch thread each.
        assert set(client.run(torch.get_num_threads).values()) == {1}
        assert set(client.run(limit_torch_threads, 1).values()) == {1}
        with joblib.parallel_backend("dask"):
            parallel = GridSearchCV(estimator, grid, cv=3, n_jobs=-1).fit(X, y)

    np.testing.assert_array_equal(parallel.cv_results_["mean_test_score"],
                                  serial.cv_results_["mean_test_score"])
    assert parallel.best_params_ == serial.best_params_
    np.testing.assert_array_equal(parallel.predict(X), serial.predict(X))


# ---------------------------------------------------------------- accelerate
def test_accelerated_fit_applies_reweighting():
    pytest.importorskip("accelerate", reason="AccelerateMixin needs accelerate")
    from accelerate import Accelerator
    from skorch.hf import AccelerateMixin

    class AcceleratedRobustNet(AccelerateMixin, RobustNetClassifier):
        """What a user would write: skorch's mixin, no other change."""

    X, y = make_classification(n_samples=300, n_features=8, n_informative=5, n_classes=3,
                               random_state=0)
    y[:45] = (y[:45] + 1) % 3
    params = dict(max_epochs=4, batch_size=32, verbose=0, random_state=0,
                  weighting="truncate", warmup_epochs=1, module__hidden_layer_sizes=(16,))
    net = AcceleratedRobustNet(accelerator=Accelerator(cpu=True), **params).fit(X, y)
    weight_mean = net.history[:, "weight_mean"]
    assert weight_mean[0] == 1.0  # warm-up
    assert all(w < 1.0 for w in weight_mean[1:])

    # Same result as the plain estimator: same weights, same model.
    plain = RobustNetClassifier(**params).fit(X, y)
    np.testing.assert_allclose(weight_mean, plain.history[:, "weight_mean"], atol=1e-6)
    np.testing.assert_allclose(net.predict_proba(X), plain.predict_proba(X), atol=1e-5)
    np.testing.assert_allclose(net.noise_scores_, plain.noise_scores_, atol=1e-5)


def test_ready_made_accelerated_classifier_single_process():
    pytest.importorskip("accelerate", reason="AccelerateMixin needs accelerate")
    from accelerate import Accelerator

    from skrobust.distributed import AcceleratedRobustNetClassifier

    X, y = make_classification(n_samples=200, n_features=8, n_informative=5, n_classes=3,
                               random_state=0)
    params = dict(max_epochs=3, batch_size=32, verbose=0, random_state=0,
                  weighting="adaptive", warmup_epochs=1, module__hidden_layer_sizes=(8,))
    net = AcceleratedRobustNetClassifier(accelerator=Accelerator(cpu=True), **params)
    net.fit(X, y)
    plain = RobustNetClassifier(**params).fit(X, y)
    np.testing.assert_allclose(net.predict_proba(X), plain.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(net.label_issues_, plain.label_issues_)


def test_two_process_weights_equal_single_process(tmp_path):
    pytest.importorskip("accelerate", reason="data-parallel training needs accelerate")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    import torch.multiprocessing as mp

    world_size = 2
    # gloo's threads occasionally abort a process at random (SIGABRT, "terminate
    # called without an active exception", about one run in seven here, with any
    # library versions): a run killed by a signal is retried; a Python error is not.
    for attempt in range(3):
        out_dir = tmp_path / f"attempt{attempt}"
        out_dir.mkdir()
        context = mp.start_processes(
            _two_process_worker, args=(world_size, str(out_dir)),
            nprocs=world_size, join=False, start_method="spawn")
        deadline = time.monotonic() + 180
        try:
            while not context.join(timeout=1):
                if time.monotonic() > deadline:
                    for process in context.processes:
                        process.kill()
                    pytest.fail("the two training processes did not finish within 180 s")
            break
        except mp.ProcessExitedException as exc:
            if exc.signal_name is None or attempt == 2:
                raise
    ranks = [torch.load(out_dir / f"rank{r}.pt") for r in range(world_size)]

    # The reference: one process, the whole global batch, the plain estimator.
    X, y, sample_weight = _step_data()
    recorder = _RecordStep()
    reference = RobustNetClassifier(callbacks=[("record", recorder)], **_STEP_PARAMS)
    reference.fit(X, y, sample_weight=sample_weight)
    expected = _outcome(reference, recorder)

    assert [r["batch_rows"] for r in ranks] == [_N_ROWS // 2, _N_ROWS // 2]
    weights = torch.cat([r["weights"] for r in ranks])
    assert 0 < int((weights == 0).sum()) < _N_ROWS  # the truncation did cut
    torch.testing.assert_close(weights, expected["weights"], rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([r["norms"] for r in ranks]), expected["norms"])
    for r in ranks:
        for name, grad in expected["grads"].items():
            # The all-reduced gradient of every process: (1/B) sum_i c_i grad_i.
            torch.testing.assert_close(r["grads"][name], grad, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(r["params"][name], expected["params"][name])
        assert r["weight_mean"] == pytest.approx(expected["weight_mean"])
        assert r["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
        # Norms of a 32-row and a 64-row batch agree to float32 rounding only,
        # which the standardisation of the noise scores magnifies a little.
        torch.testing.assert_close(r["noise_scores"], expected["noise_scores"],
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["proba"], torch.as_tensor(reference.predict_proba(X)),
                                   rtol=1e-5, atol=1e-6)

    X_odd, y_odd = _odd_data()
    odd = RobustNetClassifier(**_ODD_PARAMS).fit(X_odd, y_odd)
    for r in ranks:
        torch.testing.assert_close(r["odd_proba"], torch.as_tensor(odd.predict_proba(X_odd)),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r["odd_noise_scores"], torch.as_tensor(odd.noise_scores_),
                                   rtol=1e-4, atol=1e-5)
