"""Nothing lost: related techniques in the fit, divergence, checkpoints, interrupts."""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback, Checkpoint, LoadInitState

from skrobust.losses import GeneralizedCrossEntropy


def test_small_loss_mode_ramps_and_drops(small_data, make_net):
    X, y = small_data
    net = make_net(weighting="small_loss", forget_rate=0.3, warmup_epochs=2,
                   max_epochs=4).fit(X, y)
    lows = net.history[:, "weight_low"]
    assert lows[0] == pytest.approx(0.15, abs=0.03)   # half the rate in epoch 1 of 2
    assert lows[-1] == pytest.approx(0.3, abs=0.03)


def test_small_loss_auto_rate_uses_the_flagged_share(small_data, make_net):
    X, y = small_data
    net = make_net(weighting="small_loss", max_epochs=3).fit(X, y)
    assert 0 <= net.history[-1, "weight_low"] < 0.5


def test_forward_correction_estimates_a_transition_matrix(small_data, make_net):
    X, y = small_data
    net = make_net(loss_correction="forward", warmup_epochs=2, max_epochs=4).fit(X, y)
    T = net.transition_matrix_
    assert T.shape == (3, 3)
    np.testing.assert_allclose(T.sum(1), 1)
    assert (np.diag(T) > 0.3).all()
    assert np.isfinite(net.history[:, "train_loss"]).all()


@pytest.mark.parametrize("params, match", [
    (dict(loss_correction="forward", criterion=GeneralizedCrossEntropy), "default criterion"),
    (dict(loss_correction="forward", warmup_epochs=0), "warmup_epochs >= 1"),
    (dict(loss_correction="backward"), "loss_correction must be None or 'forward'"),
    (dict(forget_rate=1.0), "forget_rate must be 'auto' or a number in"),
])
def test_invalid_related_technique_settings(small_data, make_net, params, match):
    X, y = small_data
    with pytest.raises(ValueError, match=match):
        make_net(**params).fit(X, y)


def test_robust_loss_as_criterion_composes_with_reweighting(small_data, make_net):
    X, y = small_data
    net = make_net(criterion=GeneralizedCrossEntropy, criterion__q=0.5).fit(X, y)
    assert net.score(X, y) > 0.5
    np.testing.assert_allclose(net.predict_proba(X).sum(1), 1)


def test_divergence_stops_with_a_clear_error(small_data, make_net):
    X, y = small_data
    with pytest.raises(FloatingPointError, match="epoch 1.*learning rate"):
        make_net(lr=1e30, optimizer=torch.optim.SGD, warmup_epochs=0).fit(X * 1e10, y)


def test_save_and_load_params_round_trip(small_data, make_net, tmp_path):
    X, y = small_data
    net = make_net(module__dropout=0.2).fit(X, y)
    net.save_params(f_params=tmp_path / "p.pt", f_norm_memory=tmp_path / "n.pt",
                    f_proba_memory=tmp_path / "m.pt")
    fresh = make_net(module__dropout=0.2, max_epochs=0).fit(X, y)
    fresh.load_params(f_params=tmp_path / "p.pt", f_norm_memory=tmp_path / "n.pt",
                      f_proba_memory=tmp_path / "m.pt")
    np.testing.assert_array_equal(fresh.predict_proba(X), net.predict_proba(X))
    np.testing.assert_array_equal(fresh.noise_scores_, net.noise_scores_)


def test_checkpoint_resume_continues_the_row_memories(small_data, make_net, tmp_path):
    X, y = small_data
    files = dict(f_params="p.pt", f_optimizer="o.pt", f_history="h.json",
                 f_norm_memory="n.pt", f_proba_memory="m.pt")
    cp = Checkpoint(dirname=str(tmp_path), monitor=None, **files)
    first = make_net(max_epochs=3, callbacks=[cp]).fit(X, y)
    cp2 = Checkpoint(dirname=str(tmp_path), monitor=None, **files)
    resumed = make_net(max_epochs=2, callbacks=[cp2, LoadInitState(cp2)]).fit(X, y)
    assert len(resumed.history) == 5
    assert int(resumed.norm_memory_.counts.min()) == 5
    assert not np.array_equal(first.noise_scores_, resumed.noise_scores_)


def test_warm_start_keeps_memories(small_data, make_net):
    X, y = small_data
    net = make_net(warm_start=True, max_epochs=2).fit(X, y)
    net.fit(X, y)
    assert len(net.history) == 4
    assert int(net.norm_memory_.counts.min()) == 4


class _Interrupt(Callback):
    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == 2:
            raise KeyboardInterrupt


def test_keyboard_interrupt_leaves_a_usable_model(small_data, make_net):
    X, y = small_data
    net = make_net(max_epochs=10, callbacks=[_Interrupt()]).fit(X, y)
    assert len(net.history) == 2
    assert net.predict(X).shape == (len(y),)
    assert np.isfinite(net.noise_scores_).all()
