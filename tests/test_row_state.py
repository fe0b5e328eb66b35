"""Per-row state: the epoch record folded into the memories and the history summary."""

import pytest
import torch

from skrobust.memory import RowMemory, standardize_batches
from skrobust.row_state import CHUNK, LOW_WEIGHT, RowState


def _state(n=6, flags=None):
    flags = torch.zeros(n, dtype=torch.bool) if flags is None else torch.as_tensor(flags)
    return RowState(torch.arange(n) % 2, RowMemory(n), RowMemory(n, width=2),
                    to_memory=lambda out: torch.softmax(out, dim=-1),
                    flag_rows=lambda state: flags)


def test_an_empty_epoch_changes_nothing():
    state = _state()
    state.start_epoch()
    assert state.end_epoch() is None
    assert not state.norm_memory.seen.any()


def test_end_epoch_summarises_weights_and_updates_the_memories():
    state = _state()
    state.start_epoch()
    norms = [torch.tensor([1.0, 2.0, 9.0]), torch.tensor([0.5, 0.7, 0.6])]
    logits = [torch.randn(3, 2), torch.randn(3, 2)]
    weights = [torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0, 0.2, 1.0])]
    rows = [torch.tensor([4, 0, 2]), torch.tensor([1, 5, 3])]
    for r, n, w, o in zip(rows, norms, weights, logits):
        state.record(r, n, w, o)
    summary = state.end_epoch()
    assert summary["weight_mean"] == pytest.approx(4.2 / 6)
    assert summary["weight_low"] == pytest.approx(2 / 6)
    order = torch.cat(rows)
    torch.testing.assert_close(state.norm_memory.values[order], standardize_batches(norms),
                               check_dtype=False)
    torch.testing.assert_close(state.output_memory.values[order],
                               torch.softmax(torch.cat(logits), dim=-1), check_dtype=False)
    assert state.end_epoch() is None  # the record was consumed


def test_an_epoch_of_many_steps_is_folded_as_one():
    # More steps than one joined entry holds, and a smaller last batch: the
    # memories and the summary are those of the whole epoch's record at once.
    n_steps, size = 2 * CHUNK + 3, 4
    n = n_steps * size - 1
    state = _state(n)
    state.start_epoch()
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=generator)
    norms, logits, weights = [], [], []
    for start in range(0, n, size):
        rows = order[start:start + size]
        norms.append(torch.rand(len(rows), generator=generator))
        logits.append(torch.randn(len(rows), 2, generator=generator))
        weights.append((torch.rand(len(rows), generator=generator) > 0.3).float())
        state.record(rows, norms[-1], weights[-1], logits[-1])
    summary = state.end_epoch()
    all_weights = torch.cat(weights)
    assert summary["weight_mean"] == pytest.approx(float(all_weights.mean()))
    assert summary["weight_low"] == pytest.approx(float((all_weights < LOW_WEIGHT).float().mean()))
    torch.testing.assert_close(state.norm_memory.values[order], standardize_batches(norms),
                               check_dtype=False)
    torch.testing.assert_close(state.output_memory.values[order],
                               torch.softmax(torch.cat(logits), dim=-1), check_dtype=False)
    assert int(state.norm_memory.counts.min()) == 1
    assert state.end_epoch() is None


def test_low_weight_threshold_is_exclusive():
    state = _state(2)
    state.start_epoch()
    state.record(torch.tensor([0, 1]), torch.ones(2), torch.tensor([LOW_WEIGHT, 0.49]),
                 torch.zeros(2, 2))
    assert state.end_epoch()["weight_low"] == 0.5


def test_batches_without_rows_only_feed_the_summary():
    state = _state()
    state.start_epoch()
    state.record(None, torch.ones(3), torch.zeros(3), torch.zeros(3, 2))
    assert state.end_epoch() == {"weight_mean": 0.0, "weight_low": 1.0}
    assert not state.norm_memory.seen.any()


def test_flag_rate_counts_only_rows_trained_on():
    state = _state(4, flags=[True, True, False, False])
    assert state.flag_rate() == 0.0
    state.start_epoch()
    state.record(torch.tensor([0, 2]), torch.ones(2), torch.ones(2), torch.zeros(2, 2))
    state.end_epoch()
    assert state.flag_rate() == 0.5
    assert state.flags().tolist() == [True, True, False, False]
