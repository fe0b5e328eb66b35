"""Residual scores and flags of the regressor (skrobust.residuals)."""

import pytest
import torch

from skrobust.residuals import flag_outlying_residuals, residual_scores, robust_scale


def test_robust_scale_ignores_a_minority_of_wild_values():
    values = torch.cat([torch.randn(800, generator=torch.Generator().manual_seed(0)),
                        torch.full((200,), 1e6)]).double()
    centre, spread = robust_scale(values)
    assert abs(float(centre)) < 0.5 and 0.9 < float(spread) < 2.5


def test_robust_scale_fallbacks():
    mostly_equal = torch.tensor([0.0] * 8 + [2.0, 4.0], dtype=torch.float64)
    _, spread = robust_scale(mostly_equal)
    assert float(spread) == pytest.approx(1.2533 * 0.6)
    _, spread = robust_scale(torch.full((5,), 3.0, dtype=torch.float64))
    assert float(spread) == 1.0


def test_residual_scores_by_hand_and_nan_for_unseen():
    pred = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0], [float("nan")]],
                        dtype=torch.float64)
    target = torch.tensor([[0.1], [0.9], [2.0], [3.1], [9.0], [1.0]], dtype=torch.float64)
    scores = residual_scores(pred, target)
    # residuals -0.1, 0.1, 0, -0.1, -5: median -0.1, MAD 0.1
    expected = [0.0, 0.2 / 0.14826, 0.1 / 0.14826, 0.0, 4.9 / 0.14826]
    assert scores[:5].tolist() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert torch.isnan(scores[5])


def test_residual_scores_combine_targets_by_root_mean_square():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(200, 2, generator=g, dtype=torch.float64)
    target = torch.zeros(200, 2, dtype=torch.float64)
    target[0] = torch.tensor([40.0, 0.0])
    scores = residual_scores(pred, target)
    assert int(scores.argmax()) == 0
    only_first = residual_scores(pred[:, :1], target[:, :1])
    assert float(scores[0]) == pytest.approx(
        ((only_first[0] ** 2 + residual_scores(pred[:, 1:], target[:, 1:])[0] ** 2) / 2) ** 0.5)


def _case(n=1000, n_bad=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, 1, generator=g, dtype=torch.float64) * 0.3
    target = torch.zeros(n, 1, dtype=torch.float64)
    target[:n_bad] = 5.0
    return pred, target


def test_flags_gross_rows_and_almost_no_gaussian_ones():
    pred, target = _case()
    norms = torch.ones(len(pred), dtype=torch.float64)
    flags = flag_outlying_residuals(pred, target, norms)
    assert flags[:100].all() and flags[100:].float().mean() < 0.01
    clean = flag_outlying_residuals(pred, torch.zeros_like(target), norms)
    assert clean.float().mean() < 0.01


def test_flags_need_a_large_norm_and_a_large_residual():
    pred, target = _case()
    norms = torch.ones(len(pred), dtype=torch.float64)
    norms[:50] = -1.0
    assert not flag_outlying_residuals(pred, target, norms)[:50].any()
    tiny_pred, tiny_target = pred * 1e-3, target * 1e-3  # outlying, but tiny residuals
    assert not flag_outlying_residuals(tiny_pred, tiny_target, norms).any()
    assert flag_outlying_residuals(tiny_pred, tiny_target, norms, min_residual=0.0)[50:100].all()


def test_threshold_is_read():
    pred, target = _case(n_bad=0)
    target[:10] = 1.2  # about 4 robust sd from the rest
    norms = torch.ones(len(pred), dtype=torch.float64)
    assert flag_outlying_residuals(pred, target, norms, threshold=3.0)[:10].float().mean() > 0.5
    assert not flag_outlying_residuals(pred, target, norms, threshold=8.0)[:10].any()
