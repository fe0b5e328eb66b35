"""Row memory and row selection, on their own."""

import numpy as np
import torch

from skrobust.memory import RowMemory, standardize
from skrobust.selection import confident_disagreement, flag_noisy_rows


def test_confident_disagreement_by_hand():
    proba = torch.tensor([
        [0.90, 0.05, 0.05],   # label 0, confident 0 -> ok
        [0.70, 0.20, 0.10],   # label 1, but confidently 0 -> flagged
        [0.10, 0.60, 0.30],   # label 1, confident 1 -> ok
        [0.30, 0.30, 0.40],   # label 2: t_2 = mean(0.4, 0.6) = 0.5; nothing confident
        [0.05, 0.35, 0.60],   # label 2, confident 2 -> ok
    ], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2, 2])
    # thresholds: t0 = 0.9, t1 = mean(0.2, 0.6) = 0.4, t2 = 0.5
    # row 1: p0 = 0.7 < t0 -> not confident 0; p1 = 0.2 < t1 -> nothing confident -> ok
    assert confident_disagreement(proba, labels).tolist() == [False] * 5
    proba[1] = torch.tensor([0.95, 0.03, 0.02], dtype=torch.float64)
    assert confident_disagreement(proba, labels).tolist() == [False, True, False, False, False]


def test_per_class_thresholds_spare_a_hard_class():
    # class 1 is hard: the model gives its rows only 0.4 on average, yet they are
    # not flagged since 0.4 is class 1's own threshold.
    proba = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.6, 0.4]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    assert not confident_disagreement(proba, labels).any()


def test_absent_class_is_never_confident():
    proba = torch.tensor([[0.2, 0.1, 0.7], [0.9, 0.05, 0.05]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    # class 2 has no rows: no threshold; row 0 is not confidently anything else.
    assert confident_disagreement(proba, labels).tolist() == [False, False]


def test_flag_noisy_rows_needs_both_signals_and_skips_unseen_rows():
    proba = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.1, 0.9], [0.95, 0.05]],
                         dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1])
    scores = torch.tensor([0.0, 2.0, 0.0, float("nan")], dtype=torch.float64)
    flags = flag_noisy_rows(proba, labels, scores)
    assert flags.tolist() == [False, True, False, False]
    # Row 1 disagrees but its gradient norm is below the median: spared.
    scores = torch.tensor([0.0, -1.0, 0.0, 3.0], dtype=torch.float64)
    assert flag_noisy_rows(proba, labels, scores).tolist() == [False, False, False, True]


def test_row_memory_moving_average():
    memory = RowMemory(4, momentum=0.5)
    memory.update(torch.tensor([0, 2]), torch.tensor([1.0, 3.0]))
    memory.update(torch.tensor([0]), torch.tensor([3.0]))
    values = memory.values.numpy()
    np.testing.assert_allclose(values[[0, 2]], [2.0, 3.0])
    assert np.isnan(values[[1, 3]]).all()
    assert memory.counts.tolist() == [2, 0, 1, 0]
    assert memory.seen.tolist() == [True, False, True, False]


def test_row_memory_vectors():
    memory = RowMemory(3, width=2, momentum=0.9)
    memory.update(torch.tensor([1]), torch.tensor([[0.2, 0.8]]))
    memory.update(torch.tensor([1]), torch.tensor([[1.2, -0.2]]))
    np.testing.assert_allclose(memory.values[1].numpy(), [0.3, 0.7])


def test_standardize():
    norms = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0, float("nan")])
    z = standardize(norms)
    assert z[2] == 0 and z[4] > 10 and z[5] == 0
    assert torch.equal(standardize(torch.full((5,), 2.0)), torch.zeros(5))
