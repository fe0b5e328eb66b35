"""Speed and memory of robust training against plain training.

Run::

    python benchmarks/bench_speed.py [--quick] [--device cpu|cuda] [--threads N]
                                     [--sections steps,memory,fit,profile]
                                     [--profile] [--fit-rows N] [--fit-rounds N]
                                     [--output PATH]

Prints markdown tables; a full run also writes them to
``benchmarks/results/speed_<device>.md`` (``--output`` to choose the file).
torch runs on one thread by default (``torch.set_num_threads(1)``).

What is measured
----------------
Every ratio compares methods timed side by side in one process: the methods
take turns within each round, in a rotating order, the ratio to the baseline is
formed inside each round, and the table shows the median over the rounds with
half the interquartile range (``1.23x ±0.02``). Absolute times are medians too.

1. **Step cost.** One training step on a fixed random batch, for the MLPs
   64-256-256-10, 100-512-512-2 and 64-128-128-128-10 (ReLU,
   :class:`skrobust.modules.MLP`) at batch sizes 32, 128 and 512, with plain
   SGD. The baseline, *plain*, is forward + mean cross-entropy + backward +
   ``optimizer.step()``. Every robust variant does forward, per-sample gradient
   L2 norms, :func:`skrobust.compute_weights` (``"truncate"``), the weighted
   gradient ``sum_i w_i grad_i / B`` and ``optimizer.step()``:

   * *ghost* / *generic*: :func:`skrobust.engines.make_engine` with that engine;
   * *vmap*: ``torch.func.vmap(grad(...))`` over ``functional_call``, which
     materialises per-sample gradients, then a weighted sum of them;
   * *loop*: one ``autograd.grad`` per sample on a retained graph, then one
     weighted backward (the original prototype's approach);
   * *opacus*: ``opacus.GradSampleModule`` per-sample gradients, weighted sum;
   * *backpack*: BackPACK ``BatchL2Grad`` norms, then a second, weighted
     backward pass over the retained graph.

   The opacus and backpack columns appear only if those packages import. A
   second table runs a network that the ghost engine does not cover (an
   element-wise scale layer with its own ``nn.Parameter``) through
   ``grad_engine="auto"``, which falls back to the generic engine. A phase
   table splits the plain, ghost and generic steps of 64-256-256-10 into their
   parts (each phase followed by a device synchronisation).

2. **Peak memory** at batch 512: the most bytes torch holds during one step
   (parameters and batch, plus the peak that the step allocates above what was
   allocated when it started), for each method relative to plain. On CUDA the
   step's peak is ``torch.cuda.max_memory_allocated`` minus
   ``torch.cuda.memory_allocated`` at the start. On CPU ``tracemalloc`` does not see
   torch's allocations, so the step runs under ``torch.profiler`` with
   ``profile_memory=True`` and the peak is the maximum of the running sum of
   its allocation events (torch's CPU allocator; scratch memory that oneDNN or
   BLAS allocate on their own is not included).

3. **Whole fit against what users would use instead** (issue 16). 200,000 rows
   x 50 features, 5 classes (labels from a random linear teacher, 20% flipped),
   the 50-128-128-5 MLP, Adam(lr=1e-3), batch 128, 2 epochs, one thread for
   torch and for the BLAS/OpenMP pools (``threadpoolctl``), time measured as the
   process's CPU time (``time.process_time``) so that other processes' load does
   not count: :class:`skrobust.RobustNetClassifier` with its defaults and with
   ``weighting="truncate"``, skorch's ``NeuralNetClassifier`` (same module
   class, its default DataLoader path), the same fed through skrobust's
   ``BatchLoader``, a bare torch loop (``randperm``, tensor slicing, forward,
   mean cross-entropy, backward, ``torch.optim.Adam`` as a user writes it), the
   bare loop with ``Adam(fused=True)`` (what the estimator uses by default), the
   bare loop with the ghost-engine robust step, and scikit-learn's
   ``MLPClassifier`` (same layers, ``solver="adam"``, batch size, learning
   rate, ``max_iter`` = epochs, ``tol=0`` and ``n_iter_no_change`` past
   ``max_iter`` so that it never stops early, no early stopping, ``alpha=0``).
   Every method fits once per round, in a rotating order; ratios are formed
   within each round. rows/s is rows x epochs over the median time. Issue 16's
   targets (at most 1.0x ``MLPClassifier``, 1.3x the bare loop, 1.0x plain
   skorch) are checked for both robust rows. Peak memory: each fit runs in a
   fresh process; the kernel's high-water mark of the resident set is reset
   just before the fit and read after it, minus the resident set at the start.

4. **Where the time goes** (``--profile`` runs only this): a sampling profiler
   (``setitimer(ITIMER_PROF)``, the Python stack every 0.5 ms of CPU time) over
   one fit of the robust and of the plain skorch estimator in section 3's
   setting, each sample charged to the innermost frame that belongs to a group
   (data path, forward and loss, norms, weights/rule, update, optimizer step,
   skorch's callbacks, history, epoch loop and step glue, ours).

``--quick`` shrinks everything (one batch size per model, a fit of 10,000 rows) for
a smoke run of a few minutes.
"""

import argparse
import copy
import gc
import importlib
import inspect
import json
import os
import platform
import subprocess
import sys
import time
import types
import warnings
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from _timing import (
    Interleaved,
    fmt_ratio,
    fmt_time,
    limit_threads,
    markdown_table,
    median_iqr,
    peak_rss_during,
    step_peak_bytes,
    synchronizer,
)
from torch import nn
from torch.nn import functional as F

try:
    from skorch import NeuralNetClassifier

    from skrobust import RobustNetClassifier, compute_weights
    from skrobust.data import BatchLoader, RowIndexedDataset
    from skrobust.engines import make_engine
    from skrobust.modules import MLP

    FIT_UNAVAILABLE = None
except ImportError as exc:
    # scikit-learn or skorch missing (e.g. on a bare GPU machine): sections 1 and 2
    # need only skrobust's torch-only modules, imported from a bare package without
    # its __init__ (which imports the estimator); section 3 is skipped.
    FIT_UNAVAILABLE = f"{type(exc).__name__}: {exc}"

    def _load_torch_only(name):
        if "skrobust" not in sys.modules:
            package = types.ModuleType("skrobust")
            package.__path__ = [str(Path(__file__).resolve().parents[1] / "skrobust")]
            sys.modules["skrobust"] = package
        return importlib.import_module(f"skrobust.{name}")

    compute_weights = _load_torch_only("weighting").compute_weights
    make_engine = _load_torch_only("engines").make_engine
    MLP = _load_torch_only("modules").MLP

ARCHS = {
    "64-256-256-10": (64, (256, 256), 10),
    "100-512-512-2": (100, (512, 512), 2),
    "64-128-128-128-10": (64, (128, 128, 128), 10),
}
HEADLINE = "64-256-256-10"
LR = 1e-2


# ---------------------------------------------------------------- models
class ElementwiseScale(nn.Module):
    """``x * scale`` with a learned per-feature scale: no ghost closed form."""

    def __init__(self, n):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * self.scale


class ScaledMLP(nn.Module):
    """64-256-256-10 MLP with an element-wise scale layer after the first ReLU."""

    def __init__(self, seed=0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.layers = nn.Sequential(
                nn.Linear(64, 256), nn.ReLU(), ElementwiseScale(256),
                nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10),
            )

    def forward(self, x):
        return self.layers(x)


def make_batch(n, n_in, n_out, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, n_in, generator=g)
    y = torch.randint(0, n_out, (n,), generator=g)
    return X.to(device), y.to(device)


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def _sgd(model):
    return torch.optim.SGD(_trainable(model), lr=LR)


def _weights_to_grads(params, weights, per_sample):
    """``p.grad = sum_i (w_i / n) * g_i`` from per-sample gradients ``g``."""
    c = weights / len(weights)
    for p, g in zip(params, per_sample):
        p.grad = torch.tensordot(c, g, dims=1)


# ---------------------------------------------------------------- step builders
# Each builder takes a fresh model and a batch and returns (step, release):
# ``step()`` is one training step, ``release()`` frees gradients between steps.

def build_plain(model, X, y):
    opt = _sgd(model)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y).backward()
        opt.step()

    return step, lambda: opt.zero_grad(set_to_none=True)


def build_engine(kind):
    def build(model, X, y):
        engine = make_engine(model, kind)
        opt = _sgd(model)

        def step():
            opt.zero_grad(set_to_none=True)
            with engine.capture():
                losses = F.cross_entropy(model(X), y, reduction="none")
            norms = engine.norms(losses)
            weights = compute_weights(norms, weighting="truncate")
            engine.backward(weights / len(weights))
            opt.step()

        step.engine = engine.name
        return step, lambda: opt.zero_grad(set_to_none=True)

    return build


def build_vmap(model, X, y):
    from torch.func import functional_call, grad, vmap

    opt = _sgd(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [dict(model.named_parameters())[n] for n in names]

    def loss_one(weights, x, t):
        out = functional_call(model, weights, (x.unsqueeze(0),))
        return F.cross_entropy(out, t.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))

    def step():
        opt.zero_grad(set_to_none=True)
        grads = per_sample({n: p.detach() for n, p in zip(names, params)}, X, y)
        grads = [grads[n] for n in names]
        sq = sum(g.reshape(len(X), -1).pow(2).sum(1) for g in grads)
        _weights_to_grads(params, compute_weights(sq.sqrt(), weighting="truncate"), grads)
        opt.step()

    return step, lambda: opt.zero_grad(set_to_none=True)


def build_loop(model, X, y):
    opt = _sgd(model)
    params = _trainable(model)

    def step():
        opt.zero_grad(set_to_none=True)
        losses = F.cross_entropy(model(X), y, reduction="none")
        sq = []
        for i in range(len(losses)):
            grads = torch.autograd.grad(losses[i], params, retain_graph=True)
            sq.append(sum(g.pow(2).sum() for g in grads))
        weights = compute_weights(torch.stack(sq).sqrt(), weighting="truncate")
        (losses * (weights / len(weights))).sum().backward()
        opt.step()

    return step, lambda: opt.zero_grad(set_to_none=True)


def build_opacus(model, X, y):
    from opacus import GradSampleModule

    gsm = GradSampleModule(model, loss_reduction="sum")
    opt = _sgd(model)
    params = _trainable(model)

    def step():
        gsm.zero_grad(set_to_none=True)  # also drops p.grad_sample
        F.cross_entropy(gsm(X), y, reduction="none").sum().backward()
        grads = [p.grad_sample for p in params]
        sq = sum(g.reshape(len(X), -1).pow(2).sum(1) for g in grads)
        _weights_to_grads(params, compute_weights(sq.sqrt(), weighting="truncate"), grads)
        opt.step()

    return step, lambda: gsm.zero_grad(set_to_none=True)


def build_backpack(model, X, y):
    from backpack import backpack, extend
    from backpack.extensions import BatchL2Grad

    model = extend(model)
    summed = extend(nn.CrossEntropyLoss(reduction="sum"))
    opt = _sgd(model)
    params = _trainable(model)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(X)
        with backpack(BatchL2Grad()):
            summed(out, y).backward(retain_graph=True)
        sq = sum(p.batch_l2 for p in params)
        weights = compute_weights(sq.sqrt(), weighting="truncate")
        for p in params:
            p.grad = None
        losses = F.cross_entropy(out, y, reduction="none")
        (losses * (weights / len(weights))).sum().backward()
        opt.step()

    return step, lambda: opt.zero_grad(set_to_none=True)


def _optional(module):
    try:
        __import__(module)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def method_table(include_loop=True):
    methods = {
        "plain": build_plain,
        "ghost": build_engine("ghost"),
        "generic": build_engine("generic"),
        "vmap": build_vmap,
    }
    if include_loop:
        methods["loop"] = build_loop
    if _optional("opacus"):
        methods["opacus"] = build_opacus
    if _optional("backpack"):
        methods["backpack"] = build_backpack
    return methods


def instantiate(methods, base, X, y):
    """Build every method on its own copy of ``base``; unusable ones get a reason."""
    steps, skipped = {}, {}
    for name, build in methods.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                step, release = build(copy.deepcopy(base), X, y)
                step()
        except Exception as exc:  # noqa: BLE001 - report, do not abort the benchmark
            skipped[name] = f"fails ({type(exc).__name__})"
            continue
        steps[name] = (step, release)
    return steps, skipped


# ---------------------------------------------------------------- section 1
def bench_steps(archs, batches, device, rounds, timing, include_loop_upto):
    sync = synchronizer(device)
    rows, columns = [], None
    for arch in archs:
        n_in, hidden, n_out = ARCHS[arch]
        base = MLP(n_in, n_out, hidden_layer_sizes=hidden, random_state=0).to(device)
        for batch in batches:
            X, y = make_batch(batch, n_in, n_out, device)
            methods = method_table(include_loop=batch <= include_loop_upto)
            steps, skipped = instantiate(methods, base, X, y)
            bench = Interleaved({k: s for k, (s, _) in steps.items()}, sync, **timing)
            bench.run(rounds)
            ratios = bench.ratios("plain")
            columns = columns or [m for m in method_table() if m != "plain"]
            row = [arch, batch, fmt_time(bench.median("plain"))]
            for m in columns:
                if m in ratios:
                    row.append(fmt_ratio(ratios[m]))
                else:
                    row.append(skipped.get(m, "skipped"))
            rows.append(row)
            print(f"  steps {arch} b={batch} done", file=sys.stderr, flush=True)
    headers = ["model", "batch", "plain step"] + [f"{m} / plain" for m in columns]
    return markdown_table(headers, rows)


def bench_uncovered(batches, device, rounds, timing, include_loop_upto):
    sync = synchronizer(device)
    base = ScaledMLP().to(device)
    rows, columns = [], None
    for batch in batches:
        X, y = make_batch(batch, 64, 10, device)
        methods = method_table(include_loop=batch <= include_loop_upto)
        methods.pop("ghost")
        methods.pop("generic")
        methods = {"plain": methods.pop("plain"), "auto": build_engine("auto"), **methods}
        steps, skipped = instantiate(methods, base, X, y)
        bench = Interleaved({k: s for k, (s, _) in steps.items()}, sync, **timing)
        bench.run(rounds)
        ratios = bench.ratios("plain")
        if columns is None:
            columns = [m for m in methods if m != "plain"]
            engine = getattr(steps["auto"][0], "engine", "?")
        row = ["64-256-scale-256-10", batch, fmt_time(bench.median("plain"))]
        for m in columns:
            row.append(fmt_ratio(ratios[m]) if m in ratios else skipped.get(m, "skipped"))
        rows.append(row)
        print(f"  uncovered b={batch} done", file=sys.stderr, flush=True)
    headers = ["model", "batch", "plain step"] + [
        f"auto (-> {engine}) / plain" if m == "auto" else f"{m} / plain" for m in columns
    ]
    return markdown_table(headers, rows)


def bench_phases(arch, batches, device, n_steps, budget_s=3.0):
    """Median time of each phase of the plain, ghost and generic steps."""
    sync = synchronizer(device)
    n_in, hidden, n_out = ARCHS[arch]
    base = MLP(n_in, n_out, hidden_layer_sizes=hidden, random_state=0).to(device)
    phase_names = ["zero_grad", "forward+loss", "norms", "compute_weights",
                   "backward", "optimizer.step"]
    rows = []
    for batch in batches:
        X, y = make_batch(batch, n_in, n_out, device)
        runners = {}

        plain_model = copy.deepcopy(base)
        plain_opt = _sgd(plain_model)

        def plain(lap, model=plain_model, opt=plain_opt, X=X, y=y):
            opt.zero_grad(set_to_none=True)
            lap("zero_grad")
            loss = F.cross_entropy(model(X), y)
            lap("forward+loss")
            loss.backward()
            lap("backward")
            opt.step()
            lap("optimizer.step")

        runners["plain"] = plain
        # The generic engine's cost grows with batch**2: phases up to batch 128 only.
        for kind in ("ghost", "generic") if batch <= 128 else ("ghost",):
            model = copy.deepcopy(base)
            engine = make_engine(model, kind)
            opt = _sgd(model)

            def robust(lap, model=model, engine=engine, opt=opt, X=X, y=y):
                opt.zero_grad(set_to_none=True)
                lap("zero_grad")
                with engine.capture():
                    losses = F.cross_entropy(model(X), y, reduction="none")
                lap("forward+loss")
                norms = engine.norms(losses)
                lap("norms")
                weights = compute_weights(norms, weighting="truncate")
                lap("compute_weights")
                engine.backward(weights / len(weights))
                lap("backward")
                opt.step()
                lap("optimizer.step")

            runners[kind] = robust

        records = {k: defaultdict(list) for k in runners}
        spent = dict.fromkeys(runners, 0.0)
        warm = 3
        for i in range(n_steps + warm):
            for name, run in runners.items():
                if i > warm and spent[name] > budget_s:
                    continue  # slow runner: fewer steps
                record = records[name]
                sync()
                last = [time.perf_counter()]

                def lap(phase, record=record, last=last, keep=i >= warm):
                    sync()
                    now = time.perf_counter()
                    if keep:
                        record[phase].append(now - last[0])
                    last[0] = now

                begin = time.perf_counter()
                run(lap)
                spent[name] += time.perf_counter() - begin
        for name, record in records.items():
            cells = []
            for phase in phase_names:
                cells.append(fmt_time(median_iqr(record[phase])[0]) if phase in record else "")
            total = sum(median_iqr(v)[0] for v in record.values())
            rows.append([batch, name, *cells, fmt_time(total)])
    return markdown_table(["batch", "step", *phase_names, "sum of medians"], rows)


# ---------------------------------------------------------------- section 2
def bench_memory(archs, batch, device):
    rows, columns = [], None
    for arch in archs:
        n_in, hidden, n_out = ARCHS[arch]
        base = MLP(n_in, n_out, hidden_layer_sizes=hidden, random_state=0).to(device)
        X, y = make_batch(batch, n_in, n_out, device)
        methods = method_table(include_loop=True)
        static = sum(p.numel() * p.element_size() for p in base.parameters())
        static += X.numel() * X.element_size() + y.numel() * y.element_size()
        peaks, skipped = {}, {}
        for name, build in methods.items():
            steps, why = instantiate({name: build}, base, X, y)
            if name not in steps:
                skipped.update(why)
                continue
            step, release = steps[name]  # instantiate() already ran one step
            # Count only this method's memory: the parameters and the batch, plus
            # what the step allocates on top of whatever else happens to be alive.
            _, extra = step_peak_bytes(step, device, before=release)
            peaks[name] = static + extra
            del steps, step, release
            gc.collect()
        columns = columns or [m for m in methods if m != "plain"]
        plain = peaks["plain"]
        row = [arch, batch, f"{plain / 2**20:.2f} MiB"]
        for m in columns:
            if m in peaks:
                row.append(f"{peaks[m] / plain:.2f}x ({(peaks[m] - plain) / 2**20:+.1f} MiB)")
            else:
                row.append(skipped.get(m, "skipped"))
        rows.append(row)
        print(f"  memory {arch} done", file=sys.stderr, flush=True)
    headers = ["model", "batch", "plain peak"] + [f"{m} / plain" for m in columns]
    return markdown_table(headers, rows)


# ---------------------------------------------------------------- section 3
#: The comparison a user makes (issue 16): one thread, CPU time.
USER_FIT = dict(n_rows=200_000, n_features=50, n_classes=5, hidden=(128, 128), epochs=2,
                batch=128, lr=1e-3)
QUICK_USER_FIT = dict(USER_FIT, n_rows=10_000)

ROBUST_DEFAULTS = "RobustNetClassifier (defaults)"
ROBUST_TRUNCATE = "RobustNetClassifier (weighting='truncate')"
SKORCH = "NeuralNetClassifier (skorch defaults)"
SKORCH_BATCHLOADER = "NeuralNetClassifier + BatchLoader"
BARE = "bare torch loop"
BARE_FUSED = "bare torch loop, Adam(fused=True)"
BARE_ROBUST = "bare loop + ghost robust step"
SKLEARN = "MLPClassifier (scikit-learn)"


def make_fit_data(n_rows, n_features, n_classes, noise=0.2, seed=0):
    """Features from a standard normal, labels from a random linear teacher, ``noise`` flipped."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_features), dtype=np.float32)
    teacher = rng.standard_normal((n_features, n_classes), dtype=np.float32)
    y = (X @ teacher).argmax(1)
    flip = rng.random(n_rows) < noise
    y[flip] = rng.integers(0, n_classes, flip.sum())
    return X, y.astype(np.int64)


def fit_methods(X, y, *, hidden, epochs, batch, lr, device):
    """name -> callable that runs one whole fit of that method on ``X, y``."""
    from sklearn.neural_network import MLPClassifier

    n_rows, n_features = X.shape
    n_classes = int(y.max()) + 1
    common = dict(max_epochs=epochs, batch_size=batch, lr=lr, verbose=0, device=device)

    def robust(**params):
        def fit():
            RobustNetClassifier(module__hidden_layer_sizes=hidden, random_state=0,
                                **common, **params).fit(X, y)
        return fit

    skorch_params = dict(
        module__n_features=n_features, module__n_classes=n_classes,
        module__hidden_layer_sizes=hidden, module__random_state=0,
        criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, train_split=None,
        iterator_train__shuffle=True, **common)

    def skorch_default():
        NeuralNetClassifier(MLP, **skorch_params).fit(X, y)

    def skorch_batchloader():
        dataset = RowIndexedDataset(torch.from_numpy(X), torch.from_numpy(y))
        NeuralNetClassifier(MLP, iterator_train=BatchLoader, iterator_valid=BatchLoader,
                            **skorch_params).fit(dataset, None)

    def bare(robust_step=False, fused=None):
        Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
        model = MLP(n_features, n_classes, hidden_layer_sizes=hidden, random_state=0).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr, fused=fused)
        engine = make_engine(model, "ghost") if robust_step else None
        gen = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            order = torch.randperm(n_rows, generator=gen).to(device)
            for start in range(0, n_rows, batch):
                idx = order[start:start + batch]
                xb, yb = Xt[idx], yt[idx]
                opt.zero_grad(set_to_none=True)
                if engine is None:
                    F.cross_entropy(model(xb), yb).backward()
                else:
                    with engine.capture():
                        losses = F.cross_entropy(model(xb), yb, reduction="none")
                    weights = compute_weights(engine.norms(losses), weighting="truncate")
                    engine.backward(weights / len(weights))
                opt.step()

    def sklearn_mlp():
        # The same layers, solver, batch size, learning rate and number of epochs:
        # no early stop (tol=0, n_iter_no_change past max_iter), no L2 penalty.
        MLPClassifier(hidden_layer_sizes=hidden, solver="adam", batch_size=batch,
                      learning_rate_init=lr, max_iter=epochs, tol=0.0,
                      n_iter_no_change=epochs + 1, early_stopping=False, alpha=0.0,
                      shuffle=True, random_state=0).fit(X, y)

    methods = {
        ROBUST_DEFAULTS: robust(),
        ROBUST_TRUNCATE: robust(weighting="truncate", warmup_epochs=0),
        SKORCH: skorch_default,
        SKORCH_BATCHLOADER: skorch_batchloader,
        BARE: bare,
        BARE_FUSED: lambda: bare(fused=True),
        BARE_ROBUST: lambda: bare(robust_step=True),
    }
    if device == "cpu":
        methods[SKLEARN] = sklearn_mlp
    return methods


def _setting(n_rows, n_features, n_classes, hidden, epochs, batch, lr):
    layers = "-".join(str(k) for k in (n_features, *hidden, n_classes))
    return (f"{n_rows:,} rows x {n_features} features, {n_classes} classes, MLP {layers} "
            f"(ReLU), Adam(lr={lr:g}), batch {batch}, {epochs} epochs")


def bench_fit(device, rounds, n_rows, n_features, n_classes, hidden, epochs, batch, lr):
    """Whole fits side by side: CPU time (process time), rows/s and ratios per round."""
    X, y = make_fit_data(n_rows, n_features, n_classes)
    shape = dict(hidden=hidden, epochs=epochs, batch=batch, lr=lr, device=device)
    methods = fit_methods(X, y, **shape)
    # Warm-up (imports, first-call set-up) on a small slice: the timed fits then
    # start warm without a full-size untimed fit of every method.
    for fn in fit_methods(X[:2_000], y[:2_000], **shape).values():
        fn()
    on_cpu = torch.device(device).type == "cpu"
    clock = time.process_time if on_cpu else time.perf_counter
    bench = Interleaved(methods, synchronizer(device), clock=clock, calibrate=False)
    for r in range(rounds):
        bench.run(1)
        print(f"  fit round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    bases = [SKLEARN, BARE, SKORCH] if SKLEARN in methods else [BARE, SKORCH]
    ratios = {base: bench.ratios(base) for base in bases}
    rows = []
    for name in bench.times:
        seconds = bench.median(name)
        rows.append([name, fmt_time(seconds), f"{n_rows * epochs / seconds:,.0f}",
                     *(fmt_ratio(ratios[base][name]) for base in bases)])
    short = {SKLEARN: "MLPClassifier", BARE: "bare loop", SKORCH: "NeuralNetClassifier"}
    headers = ["fit", "CPU time" if on_cpu else "time", "rows/s",
               *(f"/ {short[b]}" for b in bases)]
    return markdown_table(headers, rows), {n: bench.median(n) for n in bench.times}, ratios


def _memory_child(name, device, fit):
    """In a fresh process: peak resident memory of one fit of ``name`` (JSON on stdout)."""
    X, y = make_fit_data(fit["n_rows"], fit["n_features"], fit["n_classes"])
    shape = dict(hidden=fit["hidden"], epochs=fit["epochs"], batch=fit["batch"],
                 lr=fit["lr"], device=device)
    fit_methods(X[:2_000], y[:2_000], **shape)[name]()  # warm-up: libraries loaded
    gc.collect()
    before, peak, exact = peak_rss_during(fit_methods(X, y, **shape)[name])
    print(json.dumps({"before": before, "peak": peak, "exact": exact}))


def bench_fit_memory(names, device, fit, threads):
    """Peak resident memory of each fit above the process's memory before it."""
    X, y = make_fit_data(fit["n_rows"], fit["n_features"], fit["n_classes"])
    data = X.nbytes + y.nbytes
    rows, exact = [], True
    for name in names:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", name,
               "--device", device, "--threads", str(threads), "--fit", json.dumps(fit)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        try:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            rows.append([name, f"fails ({done.stderr.strip().splitlines()[-1:]})", "", ""])
            continue
        exact = exact and result["exact"]
        extra = result["peak"] - result["before"]
        rows.append([name, f"{extra / 2**20:.1f} MiB", f"{extra / data:.2f}x",
                     f"{(data + extra) / data:.2f}x"])
        print(f"  memory {name} done", file=sys.stderr, flush=True)
    table = markdown_table(
        ["fit", "peak RSS above start", "/ data", "(data + peak above start) / data"], rows)
    how = ("the kernel's high-water mark of the resident set (VmHWM), reset just before "
           "the fit" if exact else "ru_maxrss (lifetime peak; may predate the fit)")
    note = (f"Data: X float32 + y int64 = {data / 2**20:.1f} MiB, built before the fit. "
            f"Each fit runs in a fresh process after a warm-up fit on 2,000 rows; the "
            f"peak is {how}, minus the resident set just before the fit: everything "
            "the fit adds (copies of the data, per-row memories, the network, "
            "allocator caches).")
    return note, table


# ---------------------------------------------------------------- section 4
def _code(fn):
    """The code object of a function, method, or wrapped function's outermost wrapper."""
    fn = getattr(fn, "__func__", fn)
    return fn.__code__


def _closure_codes(fn, name):
    """Code objects named ``name`` defined inside function ``fn``."""
    return [c for c in _code(fn).co_consts if isinstance(c, types.CodeType) and c.co_name == name]


def profile_groups(net, optimizer):
    """code object -> group, for the functions that a fit of ``net`` runs."""
    from skorch.history import History
    from skorch.net import NeuralNet
    from torch.utils.data.dataloader import _BaseDataLoaderIter

    from skrobust.core import RobustTrainingMixin
    from skrobust.row_state import RowState

    cls = type(net)
    groups = {
        "data path (iterator)": [BatchLoader.__iter__, _BaseDataLoaderIter.__next__],
        "forward and loss": [NeuralNet.infer, cls.infer, NeuralNet.get_loss, cls.get_loss],
        "backward": [torch.Tensor.backward, torch.autograd.backward],
        "optimizer step + zero_grad": [type(optimizer).step,
                                       inspect.unwrap(type(optimizer).step),
                                       NeuralNet._zero_grad_optimizer,
                                       torch.optim.Optimizer.zero_grad],
        "skorch: train_step glue": [NeuralNet.train_step, NeuralNet.train_step_single,
                                    *_closure_codes(NeuralNet.train_step, "step_fn")],
        "skorch: callbacks (notify)": [NeuralNet.notify, cls.notify],
        "skorch: history": [History.record_batch, History.new_batch, History.record],
        "skorch: epoch loop": [NeuralNet.run_single_epoch],
        "fit start (on_train_begin)": [NeuralNet.on_train_begin, cls.on_train_begin],
        "epoch end (on_epoch_end)": [NeuralNet.on_epoch_end, cls.on_epoch_end],
    }
    if isinstance(net, RobustTrainingMixin):
        engine = net._current_engine()
        groups["forward and loss"] += [RobustTrainingMixin.infer,
                                       RobustTrainingMixin.get_per_sample_loss]
        groups["norms (per-sample gradient norms)"] = [type(engine).norms]
        groups["weights / rule / objective"] = [RobustTrainingMixin.get_loss,
                                                RobustTrainingMixin._weigh]
        groups["update (engine backward)"] = [type(engine).backward]
        groups["skrobust: train_step glue, row state"] = [
            RobustTrainingMixin.train_step, RobustTrainingMixin.train_step_single,
            cls.train_step, RowState.record]
    table = {}
    for group, fns in groups.items():
        for fn in fns:
            table[fn if isinstance(fn, types.CodeType) else _code(fn)] = group
    return table


def sample_fit(fit_fn, interval=5e-4):
    """Run ``fit_fn()`` under a sampling profiler; return the sampled stacks' code tuples.

    Every ``interval`` seconds of the process's CPU time (``setitimer(ITIMER_PROF)``)
    the Python stack of the main thread is recorded. A sample that falls inside
    a C function (a torch kernel) is taken when it returns, with the stack of
    its Python caller. Unlike a deterministic profiler (cProfile), the cost per
    Python call is not inflated.
    """
    import signal

    samples = []

    def handler(signum, frame):
        codes = []
        while frame is not None:
            codes.append(frame.f_code)
            frame = frame.f_back
        samples.append(codes)

    previous = signal.signal(signal.SIGPROF, handler)
    signal.setitimer(signal.ITIMER_PROF, interval, interval)
    try:
        start = time.process_time()
        fit_fn()
        cpu = time.process_time() - start
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, previous)
    return samples, cpu


def profile_fit(name, fit_fn, n_steps):
    """Sampled CPU time of one fit, grouped by the innermost frame that names a group."""
    from skorch.net import NeuralNet

    nets = []
    original = NeuralNet.initialize

    def initialize(self):  # remember the net, to resolve its methods afterwards
        nets.append(self)
        return original(self)

    NeuralNet.initialize = initialize
    try:
        samples, cpu = sample_fit(fit_fn)
    finally:
        NeuralNet.initialize = original
    net = nets[-1]
    table = profile_groups(net, net.optimizer_)
    counts = defaultdict(int)
    for codes in samples:
        group = next((table[c] for c in codes if c in table), "other (fit set-up, validation)")
        counts[group] += 1
    per_sample = cpu / max(len(samples), 1)
    groups = {g: counts[g] * per_sample for g in dict.fromkeys(table.values())}
    groups["other (fit set-up, validation)"] = counts["other (fit set-up, validation)"] * per_sample
    return {"name": name, "groups": groups, "profiled": cpu, "steps": n_steps,
            "samples": len(samples)}


def bench_profile(device, n_rows, n_features, n_classes, hidden, epochs, batch, lr):
    X, y = make_fit_data(n_rows, n_features, n_classes)
    shape = dict(hidden=hidden, epochs=epochs, batch=batch, lr=lr, device=device)
    methods = fit_methods(X, y, **shape)
    n_steps = epochs * -(-n_rows // batch)
    plain_cpu = {}
    for name in (ROBUST_TRUNCATE, SKORCH, BARE):  # warm, then unprofiled CPU time
        fit_methods(X[:2_000], y[:2_000], **shape)[name]()
        start = time.process_time()
        methods[name]()
        plain_cpu[name] = time.process_time() - start
    results = [profile_fit(name, methods[name], n_steps) for name in (ROBUST_TRUNCATE, SKORCH)]
    keys = []
    for result in results:
        keys += [k for k in result["groups"] if k not in keys]
    rows = []
    for key in keys:
        if all(not r["groups"].get(key) for r in results):
            continue
        row = [key]
        for result in results:
            value = result["groups"].get(key)
            if value is None:
                row += ["", ""]
            else:
                row += [fmt_time(value / result["steps"]),
                        f"{100 * value / result['profiled']:.0f}%"]
        rows.append(row)
    rows.append(["total, profiled fit", *(c for r in results for c in (
        fmt_time(r["profiled"] / r["steps"]), f"{r['samples']:,} samples"))])
    rows.append(["total, fit without the profiler", *(c for r in results for c in (
        fmt_time(plain_cpu[r["name"]] / r["steps"]), ""))])
    rows.append([f"{BARE} without the profiler", fmt_time(plain_cpu[BARE] / n_steps), "",
                 fmt_time(plain_cpu[BARE] / n_steps), ""])
    headers = ["per training step"]
    for result in results:
        headers += [f"{result['name']}", "share"]
    return markdown_table(headers, rows)


# ---------------------------------------------------------------- main
def environment(device, threads):
    parts = [f"torch {torch.__version__}", f"device {device}"]
    if torch.device(device).type == "cuda":
        parts.append(torch.cuda.get_device_name())
    parts.append(f"{platform.processor() or platform.machine()}, "
                 f"{os.cpu_count()} CPUs, torch threads {threads}")
    for dist in ("skorch", "scikit-learn", "opacus", "backpack-for-pytorch"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


SECTIONS = ("steps", "memory", "fit", "profile")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fast smoke run")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for torch and for numpy's/scikit-learn's pools")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default: all of {SECTIONS})")
    parser.add_argument("--profile", action="store_true",
                        help="only the profile of a fit (same as --sections profile)")
    parser.add_argument("--fit-rows", type=int, default=None,
                        help="rows of the whole-fit comparison (default 200,000; quick 10,000)")
    parser.add_argument("--fit-rounds", type=int, default=None,
                        help="rounds of the whole-fit comparison (default 5; quick 1)")
    parser.add_argument("--output", default=None,
                        help="markdown file to write (default for a full run of all "
                             "sections: benchmarks/results/speed_<device>.md)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fit", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    limiter = limit_threads(args.threads)  # noqa: F841 - keeps the limits alive
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    device = args.device
    warnings.simplefilter("ignore")  # opacus/backpack hooks, ConvergenceWarning
    if args.memory_child is not None:
        fit = json.loads(args.fit)
        fit["hidden"] = tuple(fit["hidden"])
        _memory_child(args.memory_child, device, fit)
        return
    sections = ("profile",) if args.profile else tuple(
        s.strip() for s in args.sections.split(",") if s.strip())
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    if args.quick:
        archs, batches, rounds = [HEADLINE], [32], 3
        timing = dict(target_s=0.005, warmup=1, budget_s=0.5)
        phase_batches, phase_steps, mem_archs, mem_batch = [32], 10, [HEADLINE], 128
        fit, fit_rounds = dict(QUICK_USER_FIT), 1
    else:
        archs, batches, rounds = list(ARCHS), [32, 128, 512], 15
        timing = dict(target_s=0.03, warmup=3, budget_s=3.0)
        phase_batches, phase_steps, mem_archs, mem_batch = [32, 128, 512], 200, list(ARCHS), 512
        fit, fit_rounds = dict(USER_FIT), 5
    if args.fit_rows is not None:
        fit["n_rows"] = args.fit_rows
    if args.fit_rounds is not None:
        fit_rounds = args.fit_rounds

    start = time.perf_counter()
    out = []

    def emit(*blocks):
        for block in blocks:
            print(block, flush=True)
            out.append(block)

    command = " ".join(["python benchmarks/bench_speed.py", *(argv or sys.argv[1:])])
    emit(f"# skrobust speed benchmark ({'quick' if args.quick else 'full'})", "",
         f"`{command.strip()}`", "", environment(device, args.threads), "")

    if "steps" in sections:
        emit("## 1. Step cost: robust step / plain step", "",
             "Median over rounds of the per-round ratio, ± half the IQR (wall time). SGD, "
             f"fixed batch. Up to {rounds} rounds; a method past {timing['budget_s']} s of "
             "timed work sits out the remaining rounds ('(1 round)': a single round).", "")
        emit(bench_steps(archs, batches, device, rounds, timing,
                         include_loop_upto=128 if args.quick else 10**9), "")
        emit("### Module not covered by the ghost engine (grad_engine='auto')", "")
        emit(bench_uncovered(batches, device, rounds, timing,
                             include_loop_upto=128 if args.quick else 10**9), "")
        emit(f"### Phases of one step, {HEADLINE} (median per phase, synchronised)", "")
        emit(bench_phases(HEADLINE, phase_batches, device, phase_steps), "")

    if "memory" in sections:
        emit(f"## 2. Peak memory of one step at batch {mem_batch}: method / plain", "",
             "Parameters + batch + the peak the step allocates above its start"
             + (" (torch.cuda.max_memory_allocated)." if device == "cuda"
                else " (torch CPU allocator events from torch.profiler)."), "")
        emit(bench_memory(mem_archs, mem_batch, device), "")

    if "fit" in sections:
        emit("## 3. Whole fit against what users would use instead", "")
        if FIT_UNAVAILABLE is not None:
            emit(f"Skipped: {FIT_UNAVAILABLE}.", "")
        else:
            clock = ("CPU time of the process (`time.process_time`), so that other "
                     "processes' load does not count" if device == "cpu" else "wall time")
            emit(_setting(**fit) + f"; {args.threads} thread(s) for torch, BLAS and "
                 f"OpenMP. {fit_rounds} rounds; in each round every method fits once, in a "
                 "rotating order, and the ratios are formed within the round (median over "
                 f"rounds, ± half the IQR). Time: {clock}. rows/s: rows x epochs / time.",
                 "")
            table, medians, ratios = bench_fit(device, fit_rounds, **fit)
            emit(table, "")
            if device == "cpu":
                emit(targets_table(ratios), "")
                note, table = bench_fit_memory(
                    [ROBUST_DEFAULTS, ROBUST_TRUNCATE, SKORCH, BARE, SKLEARN], device, fit,
                    args.threads)
                emit("### Peak memory of the whole fit", "", note, "", table, "")

    if "profile" in sections and FIT_UNAVAILABLE is not None:
        emit("## 4. Where the time of a fit goes", "", f"Skipped: {FIT_UNAVAILABLE}.", "")
    elif "profile" in sections:
        emit("## 4. Where the time of a fit goes", "",
             "A sampling profiler over one fit (" + _setting(**fit) + "), one thread: every "
             "0.5 ms of the process's CPU time (`setitimer(ITIMER_PROF)`) the Python stack "
             "is recorded, and the sample goes to the group of the innermost frame that "
             "belongs to one (a kernel's time goes to the Python function that called it). "
             "CPU time per training step and share of the fit. The interpreter takes a "
             "signal only at its next check (a call, a loop's jump back), so the tail of "
             "one group can be charged to the next one (e.g. to the data path, where the "
             "epoch loop resumes the iterator): read single groups to about +-5% of the "
             "step. A deterministic profiler (cProfile) was not used: it charges every "
             "Python call and made the step about 6x slower, inflating the Python-heavy "
             "groups.", "")
        emit(bench_profile(device, **fit), "")

    emit(f"_Total benchmark time: {time.perf_counter() - start:.0f} s._")

    path = args.output
    if path is None and not args.quick and set(sections) == set(SECTIONS):
        path = Path(__file__).parent / "results" / f"speed_{device}.md"
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(out) + "\n")
        print(f"\nwritten to {path}", file=sys.stderr)


TARGETS = ((SKLEARN, 1.0), (BARE, 1.3), (SKORCH, 1.0))


def targets_table(ratios):
    """Issue 16's targets for the robust fit: met or missed, and by how much."""
    rows = []
    for name in (ROBUST_DEFAULTS, ROBUST_TRUNCATE):
        for base, target in TARGETS:
            if base not in ratios:
                continue
            med = median_iqr(ratios[base][name])[0]
            verdict = "met" if med <= target else f"missed by {100 * (med / target - 1):.0f}%"
            rows.append([name, f"<= {target:.1f}x {base}", f"{med:.2f}x", verdict])
    return markdown_table(["fit", "target", "measured", "verdict"], rows)


if __name__ == "__main__":
    main()
