"""Research prototypes of default rules, for ``bench_defaults.py --methods ...``.

Not part of the package: candidate rules live here until one measures best.
``LeanGate`` ("lgate") became the default rule (``skrobust.probe``,
``skrobust.selection.choose_recipe``, ``skrobust.rules.AdaptiveRule``); the
others (out-of-sample cross-fit flags with a wrong-label mixture estimate,
``CrossFitRule``/``ValidatedRule``, and the always-on selection variants) measured
worse on the quick benchmark. They use the estimator's private hooks and may
break as those change.
"""

from __future__ import annotations

import copy
from functools import partial

import numpy as np
import torch

from skrobust import RobustNetClassifier


def cross_fit_proba(net, X, y, n_folds=2, epochs=None, start_epoch=1):
    """Out-of-sample class probabilities of every row, averaged over the epochs.

    ``n_folds`` copies of the freshly initialised module each train (plain cross
    entropy, the net's optimizer, lr and batch size) on all folds but one, and
    predict the held-out fold after every epoch from ``start_epoch`` on.
    """
    gen = torch.Generator().manual_seed(int(net._module_seed) + 17)
    n, k = len(y), len(net.classes_)
    # Stratified folds by the given label.
    fold = torch.empty(n, dtype=torch.long)
    for c in range(k):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        fold[idx] = torch.arange(len(idx)) % n_folds
    fold = fold[torch.randperm(n, generator=gen)] if False else fold
    proba = torch.zeros(n, k, dtype=torch.float64)
    counts = torch.zeros(n)
    epochs = net.max_epochs if epochs is None else epochs
    device = next(net.module_.parameters()).device
    for f in range(n_folds):
        train = torch.nonzero(fold != f).flatten()
        test = torch.nonzero(fold == f).flatten()
        module = copy.deepcopy(net.module_)
        opt_kwargs = dict(net.get_params_for("optimizer"))
        opt_kwargs["lr"] = net.lr
        opt = net.optimizer(module.parameters(), **opt_kwargs)
        bs = len(train) if net.batch_size == -1 else net.batch_size
        Xtr, ytr, Xte = X[train].to(device), y[train].to(device), X[test].to(device)
        for epoch in range(epochs):
            module.train()
            perm = torch.randperm(len(train), generator=gen)
            for s in range(0, len(train), bs):
                b = perm[s:s + bs]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(module(Xtr[b]), ytr[b])
                loss.backward()
                opt.step()
            if epoch + 1 >= start_epoch:
                module.eval()
                with torch.no_grad():
                    proba[test] += torch.softmax(module(Xte), -1).double().cpu()
                counts[test] += 1
    return proba / counts.clamp(min=1).unsqueeze(1)


def _train_probe(net, X, y, train, epochs, gen, eval_rows=None, start_epoch=1):
    """Train a copy of the initial module on ``train``; average predictions on ``eval_rows``."""
    device = next(net.module_.parameters()).device
    module = copy.deepcopy(net.module_)
    opt_kwargs = dict(net.get_params_for("optimizer"))
    opt_kwargs["lr"] = net.lr
    opt = net.optimizer(module.parameters(), **opt_kwargs)
    bs = len(train) if net.batch_size == -1 else net.batch_size
    Xtr, ytr = X[train].to(device), y[train].to(device)
    Xte = X[eval_rows].to(device) if eval_rows is not None else None
    proba, count = None, 0
    for epoch in range(epochs):
        module.train()
        perm = torch.randperm(len(train), generator=gen)
        for s in range(0, len(train), bs):
            b = perm[s:s + bs]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(Xtr[b]), ytr[b])
            loss.backward()
            opt.step()
        if Xte is not None and epoch + 1 >= start_epoch:
            module.eval()
            with torch.no_grad():
                p = torch.softmax(module(Xte), -1).double().cpu()
            proba = p if proba is None else proba + p
            count += 1
    last = None
    if Xte is not None:
        module.eval()
        with torch.no_grad():
            last = torch.softmax(module(Xte), -1).double().cpu()
    return (proba / max(count, 1) if proba is not None else None), last


def stratified_folds(y, n_classes, n_folds, gen):
    fold = torch.empty(len(y), dtype=torch.long)
    for c in range(n_classes):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        fold[idx] = torch.arange(len(idx)) % n_folds
    return fold


def wrong_label_share(proba, labels, *, min_share=0.1, generator=None):
    """Upper bound of the share of rows whose labels look like deliberately wrong ones.

    Each row also gets a label drawn uniformly from the other classes, on paper
    only. With ``s`` the probability of the given label and ``s'`` that of the
    paper label, ``min_t F_s(t) / F_s'(t)`` over thresholds where at least
    ``min_share`` of the paper labels fall bounds the share of given labels
    drawn like the paper ones (mixture proportion estimation).
    """
    n, k = proba.shape
    gen = generator or torch.Generator().manual_seed(0)
    shift = torch.randint(1, k, (n,), generator=gen)
    paper = (labels + shift) % k
    s = proba[torch.arange(n), labels]
    s_wrong = proba[torch.arange(n), paper]
    ts = torch.quantile(s_wrong, torch.linspace(min_share, 1.0, 19, dtype=s_wrong.dtype))
    ratios = [(s <= t).double().mean() / (s_wrong <= t).double().mean().clamp(min=1e-12)
              for t in ts]
    return float(torch.stack(ratios).min().clamp(max=1.0))


def cl_flags(proba, labels, below_uniform=True):
    from skrobust.selection import confident_disagreement

    flags = confident_disagreement(proba, labels)
    if below_uniform:
        k = proba.shape[1]
        flags &= proba[torch.arange(len(labels)), labels] < 1.0 / k
    return flags


class ValidatedRule(RobustNetClassifier):
    """Cross-fitted probes flag rows; a second probe round checks on held-out rows
    that leaving the flagged rows out raises held-out accuracy (on the given labels)."""

    proto_z = 1.0
    proto_below_uniform = True
    proto_epochs = None
    proto_score_mix = 0.5
    proto_reflag = False

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        Xall, yall = X.X, X.y
        n, k = len(yall), len(self.classes_)
        gen = torch.Generator().manual_seed(int(self._module_seed) + 17)
        epochs = self.proto_epochs or self.max_epochs
        fold = stratified_folds(yall, k, 2, gen)
        oos = torch.zeros(n, k, dtype=torch.float64)
        last = torch.zeros(n, k, dtype=torch.float64)
        for f in range(2):
            train, test = torch.nonzero(fold != f).flatten(), torch.nonzero(fold == f).flatten()
            oos[test], last[test] = _train_probe(self, Xall, yall, train, epochs, gen, test)
        self._oos = oos
        flags = cl_flags(oos, yall, self.proto_below_uniform)
        better = worse = 0
        last2 = torch.zeros(n, k, dtype=torch.float64)
        oos2 = torch.zeros(n, k, dtype=torch.float64)
        if flags.any():
            for f in range(2):
                train = torch.nonzero((fold != f) & ~flags).flatten()
                test = torch.nonzero(fold == f).flatten()
                oos2[test], last2[test] = _train_probe(self, Xall, yall, train, epochs, gen, test)
            right_old = last.argmax(1) == yall
            right_new = last2.argmax(1) == yall
            better = int((right_new & ~right_old).sum())
            worse = int((right_old & ~right_new).sum())
        margin = self.proto_z * max(better + worse, 1) ** 0.5
        opened = bool(flags.any()) and (better - worse) > margin
        self._share = float(flags.float().mean())
        self._gate = (better, worse, opened)
        if opened and self.proto_reflag:
            flags = cl_flags(oos2, yall, self.proto_below_uniform)
            self._oos = oos2
        if not opened:
            flags = torch.zeros(n, dtype=torch.bool)
        self._proto_flags = flags
        self._rule = _FixedMask((~flags).to(torch.float32))

    def _flag_rows(self, state):
        return self._proto_flags

    @property
    def noise_scores_(self):
        inside = torch.as_tensor(super().noise_scores_)
        one_hot = torch.nn.functional.one_hot(self._row_state.targets, self._oos.shape[1])
        oos = torch.linalg.vector_norm(self._oos - one_hot, dim=1)
        w = self.proto_score_mix
        return (w * oos + (1 - w) * torch.nan_to_num(inside, nan=0.0)).numpy()


class CrossFitRule(RobustNetClassifier):
    """Rows judged by out-of-sample predictions of a cross-fitted probe, then masked."""

    proto_folds = 2
    proto_gate = 0.05      # open when the wrong-label share estimate passes this
    proto_cap = True       # flag no more rows than the estimate supports
    proto_below_uniform = True
    proto_score_mix = 0.5  # weight of the out-of-sample score in noise_scores_
    proto_epochs = None    # probe epochs (None: max_epochs)

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        y_t = X.y
        self._oos = cross_fit_proba(self, X.X, y_t, n_folds=self.proto_folds,
                                    epochs=self.proto_epochs)
        share = wrong_label_share(self._oos, y_t)
        self._share = share
        flags = torch.zeros(len(y_t), dtype=torch.bool)
        if share >= self.proto_gate:
            flags = cl_flags(self._oos, y_t, self.proto_below_uniform)
            if self.proto_cap:
                budget = int(round(share * len(y_t)))
                if int(flags.sum()) > budget:
                    score = 1 - self._oos[torch.arange(len(y_t)), y_t]
                    score = torch.where(flags, score, torch.full_like(score, -1.0))
                    top = torch.argsort(score, descending=True)[:budget]
                    flags = torch.zeros_like(flags)
                    flags[top] = True
        self._proto_flags = flags
        self._rule = _FixedMask((~flags).to(torch.float32))

    def _flag_rows(self, state):
        return self._proto_flags

    @property
    def noise_scores_(self):
        inside = torch.as_tensor(super().noise_scores_)
        one_hot = torch.nn.functional.one_hot(self._row_state.targets, self._oos.shape[1])
        oos = torch.linalg.vector_norm(self._oos - one_hot, dim=1)
        w = self.proto_score_mix
        return (w * oos + (1 - w) * torch.nan_to_num(inside, nan=0.0)).numpy()


class _FixedMask:
    """A rule object (skrobust.rules interface) that applies a mask chosen before training."""

    name = "adaptive"
    uses = ()
    needs_rows = True

    def __init__(self, keep):
        self.keep = keep

    def is_active(self, epoch):
        return True

    def batch_weights(self, norms, losses, rows, epoch, state):
        return self.keep[rows].to(norms.device, norms.dtype)

    def end_epoch(self, epoch, state):
        pass


def _variant(**attrs):
    return type("CrossFitVariant", (CrossFitRule,), attrs)


def _vvariant(**attrs):
    return type("ValidatedVariant", (ValidatedRule,), attrs)


PROTOTYPES = {
    "val": ValidatedRule,
    "val_z0": _vvariant(proto_z=0.0),
    "val_z2": _vvariant(proto_z=2.0),
    "val_re": _vvariant(proto_reflag=True),
    "val_ep25": _vvariant(proto_epochs=25),
    "cf": CrossFitRule,
    "cf_nocap": _variant(proto_cap=False),
    "cf_nouni": _variant(proto_below_uniform=False),
    "cf_g10": _variant(proto_gate=0.10),
    "cf_g02": _variant(proto_gate=0.02),
    "cf_ep10": _variant(proto_epochs=10),
}
del partial


# ------------------------------------------------------------------ held-out gate
from skorch.callbacks import Callback  # noqa: E402


class _HeldOutRecorder(Callback):
    """Accuracy on held-out rows (their given labels) after every epoch."""

    def __init__(self, X, y):
        self.X, self.y = X, y
        self.right = []

    def on_epoch_end(self, net, **kwargs):
        net.module_.eval()
        with torch.no_grad():
            pred = net.module_(self.X).argmax(1)
        self.right.append((pred == self.y).numpy())


def mcnemar_gain(right_new, right_old):
    better = int((right_new & ~right_old).sum())
    worse = int((right_old & ~right_new).sum())
    return better - worse, max(better + worse, 1) ** 0.5


class _StopAt:
    """Rule wrapper that ends training after ``stop`` epochs (skorch's KeyboardInterrupt)."""

    def __init__(self, rule, stop):
        self.rule, self.stop = rule, stop
        self.name, self.uses, self.needs_rows = rule.name, rule.uses, rule.needs_rows

    def is_active(self, epoch):
        return self.rule.is_active(epoch)

    def batch_weights(self, *args):
        return self.rule.batch_weights(*args)

    def end_epoch(self, epoch, state):
        self.rule.end_epoch(epoch, state)
        if epoch >= self.stop:
            raise KeyboardInterrupt


class GatedRule(RobustNetClassifier):
    """Held-out self-check: plain vs early-stopped vs row selection, trained on 2/3 and
    compared on the held-out 1/3 (given labels); the winner is trained on all rows."""

    proto_z = 1.0
    proto_holdout = 1 / 3
    proto_candidates = ("plain_best", "select", "select_best")
    proto_select = "adaptive"

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        if getattr(self, "_in_probe", False):
            return
        from skrobust.rules import NoWeighting

        Xall, yall = X.X, X.y
        k = len(self.classes_)
        gen = torch.Generator().manual_seed(int(self._module_seed) + 23)
        fold = stratified_folds(yall, k, int(round(1 / self.proto_holdout)), gen)
        val = fold == 0
        T, V = torch.nonzero(~val).flatten(), torch.nonzero(val).flatten()
        rec = {}
        params = {key: v for key, v in self.get_params().items() if "__" not in key}
        params.update(verbose=0, callbacks=None, warm_start=False)
        params.pop("classes", None)
        module_params = {key: v for key, v in self.get_params().items()
                         if key.startswith("module__")}
        for mode in ("none", self.proto_select):
            r = _HeldOutRecorder(Xall[V], yall[V])
            probe = RobustNetClassifier(**{**params, "weighting": mode, "callbacks": [r]},
                                        **{**module_params, "classes": np.arange(k)})
            probe.fit(Xall[T].numpy(), yall[T].numpy())
            rec[mode] = np.array(r.right)
        plain = rec["none"]
        final = plain[-1]
        options = [("plain", len(plain), 0.0)]
        e_best = int(plain.mean(1).argmax())
        cand = {"plain_best": (plain[e_best], ("plain", e_best + 1))}
        sel = rec[self.proto_select]
        s_best = int(sel.mean(1).argmax())
        cand["select"] = (sel[-1], ("select", len(sel)))
        cand["select_best"] = (sel[s_best], ("select", s_best + 1))
        best = ("plain", len(plain))
        best_score = 0.0
        log = {}
        for name in self.proto_candidates:
            right, choice = cand[name]
            gain, se = mcnemar_gain(right, final)
            log[name] = (gain, round(se, 1))
            if gain > self.proto_z * se and gain > best_score:
                best, best_score = choice, gain
        self._gate = (best, log)
        mode, stop = best
        rule = NoWeighting() if mode == "plain" else self._rule
        self._rule = _StopAt(rule, stop) if stop < self.max_epochs else rule
        self._decision = best
        del options

    def _flag_rows(self, state):
        flags = super()._flag_rows(state)
        if getattr(self, "_decision", ("select",))[0] == "plain":
            return torch.zeros_like(flags)
        return flags


def _gvariant(**attrs):
    return type("GatedVariant", (GatedRule,), attrs)


PROTOTYPES.update({
    "gate": GatedRule,
    "gate_z0": _gvariant(proto_z=0.0),
    "gate_z2": _gvariant(proto_z=2.0),
    "gate_es": _gvariant(proto_candidates=("plain_best",)),
    "gate_sel": _gvariant(proto_candidates=("select",)),
})


# ------------------------------------------------------------------ selection variants
def _below_uniform(proba, labels):
    k = proba.shape[1]
    return proba[torch.arange(len(labels)), labels] < 1.0 / k


class SelectUniform(RobustNetClassifier):
    """In-training selection: confident disagreement and p(label) < 1/K (no norm test)."""

    proto_norm = False

    def _flag_rows(self, state):
        from skrobust.selection import confident_disagreement

        proba, labels, norms = (state.output_memory.values, state.targets,
                                state.norm_memory.values)
        seen = torch.isfinite(norms)
        flags = torch.zeros(len(labels), dtype=torch.bool)
        f = confident_disagreement(proba[seen], labels[seen]) & _below_uniform(
            proba[seen], labels[seen])
        if self.proto_norm:
            f &= norms[seen] > 0
        flags[seen] = f
        return flags


PROTOTYPES.update({
    "sel_uni": SelectUniform,
    "sel_uni_norm": type("SelectUniformNorm", (SelectUniform,), {"proto_norm": True}),
})


# ------------------------------------------------------------------ lean probes + gate
def lean_probe(net, X, y, train, val, epochs, seed, select=False, warmup=5):
    """Train a copy of the initial module on ``train`` with a bare torch loop.

    Returns a (epochs, len(val)) bool array: is the held-out row's prediction its
    given label, after each epoch. With ``select``, rows flagged from the running
    memories (confident disagreement, p(label) < 1/K, last-layer norm above its
    batch median) are left out from the end of the warm-up on.
    """
    from skrobust.memory import RowMemory, standardize_batches
    from skrobust.selection import confident_disagreement

    gen = torch.Generator().manual_seed(seed)
    module = copy.deepcopy(net.module_)
    opt_kwargs = dict(net.get_params_for("optimizer"))
    opt_kwargs["lr"] = net.lr
    opt = net.optimizer(module.parameters(), **opt_kwargs)
    n_tr = len(train)
    bs = n_tr if net.batch_size == -1 else net.batch_size
    Xtr, ytr, Xv, yv = X[train], y[train], X[val], y[val]
    k = len(net.classes_)
    proba_mem, norm_mem = RowMemory(n_tr, width=k), RowMemory(n_tr)
    keep = torch.ones(n_tr)
    right = []
    # last layer: the module's last Linear
    last = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
    feats = {}
    hook = last.register_forward_hook(lambda m, i, o: feats.__setitem__("h", i[0]))
    try:
        for epoch in range(1, epochs + 1):
            module.train()
            perm = torch.randperm(n_tr, generator=gen)
            rows_all, probs, norms = [], [], []
            for s in range(0, n_tr, bs):
                b = perm[s:s + bs]
                logits = module(Xtr[b])
                losses = torch.nn.functional.cross_entropy(logits, ytr[b], reduction="none")
                w = keep[b] if select and epoch > warmup else torch.ones(len(b))
                opt.zero_grad()
                (w * losses).sum().div(len(b)).backward()
                opt.step()
                if select:
                    with torch.no_grad():
                        p = torch.softmax(logits, -1)
                        g = p - torch.nn.functional.one_hot(ytr[b], k)
                        h = feats["h"]
                        nrm = g.norm(dim=1) * (h.pow(2).sum(1) + 1).sqrt()
                    rows_all.append(b)
                    probs.append(p)
                    norms.append(nrm)
            if select:
                rows_cat = torch.cat(rows_all)
                proba_mem.update(rows_cat, torch.cat(probs))
                norm_mem.update(rows_cat, standardize_batches(norms))
                if epoch >= warmup:
                    pm, nm = proba_mem.values, norm_mem.values
                    flags = (confident_disagreement(pm, ytr) & _below_uniform(pm, ytr)
                             & (nm > 0))
                    keep = (~flags).float()
            module.eval()
            with torch.no_grad():
                right.append((module(Xv).argmax(1) == yv).numpy())
    finally:
        hook.remove()
    return np.array(right)


class LeanGate(RobustNetClassifier):
    """Held-out self-check with bare-loop probes; the main run is the chosen recipe."""

    proto_z = 1.0
    proto_folds = 3  # held-out share 1/proto_folds
    proto_candidates = ("plain_best", "select", "select_best")

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        from skrobust.rules import NoWeighting

        Xall, yall = X.X, X.y
        k = len(self.classes_)
        gen = torch.Generator().manual_seed(int(self._module_seed) + 23)
        fold = stratified_folds(yall, k, self.proto_folds, gen)
        T, V = torch.nonzero(fold != 0).flatten(), torch.nonzero(fold == 0).flatten()
        E = self.max_epochs
        plain = lean_probe(self, Xall, yall, T, V, E, int(self._module_seed) + 1)
        sel = lean_probe(self, Xall, yall, T, V, E, int(self._module_seed) + 1, select=True,
                         warmup=self.warmup_epochs)
        final = plain[-1]
        e_best = int(plain.mean(1).argmax())
        s_best = int(sel.mean(1).argmax())
        cand = {"plain_best": (plain[e_best], ("plain", e_best + 1)),
                "select": (sel[-1], ("select", E)),
                "select_best": (sel[s_best], ("select", s_best + 1))}
        best, best_score, log = ("plain", E), 0.0, {}
        for name in self.proto_candidates:
            right, choice = cand[name]
            gain, se = mcnemar_gain(right, final)
            log[name] = (gain, round(se, 1))
            if gain > self.proto_z * se and gain > best_score:
                best, best_score = choice, gain
        self._gate = (best, log)
        mode, stop = best
        rule = NoWeighting() if mode == "plain" else self._rule
        self._rule = _StopAt(rule, stop) if stop < E else rule
        self._decision = best

    def _flag_rows(self, state):
        from skrobust.selection import confident_disagreement

        proba, labels, norms = (state.output_memory.values, state.targets,
                                state.norm_memory.values)
        seen = torch.isfinite(norms)
        flags = torch.zeros(len(labels), dtype=torch.bool)
        if getattr(self, "_decision", ("select",))[0] == "plain":
            return flags
        flags[seen] = (confident_disagreement(proba[seen], labels[seen])
                       & _below_uniform(proba[seen], labels[seen]) & (norms[seen] > 0))
        return flags


PROTOTYPES.update({
    "lgate": LeanGate,
    "lgate_z05": type("LG", (LeanGate,), {"proto_z": 0.5}),
    "lgate_half": type("LG", (LeanGate,), {"proto_folds": 2}),
})
