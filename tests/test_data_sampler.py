"""The sample order: exact resume, the same global batch on any process layout, epochs reshuffled."""

from __future__ import annotations

import pytest

from lmpretrain.data import EpochOrder, GlobalBatchSampler, batch_positions, epoch_permutation


def take(sampler, steps):
    out = []
    for batch in sampler:
        out.append(batch)
        if len(out) == steps:
            break
    return out


def test_resume_at_a_step_continues_exactly():
    full = take(GlobalBatchSampler(8), 10)
    resumed = take(GlobalBatchSampler(8, start_step=6), 4)
    assert resumed == full[6:]
    by_position = take(GlobalBatchSampler(8, start_position=48), 4)
    assert by_position == full[6:]


def test_position_tracks_the_next_step():
    sampler = GlobalBatchSampler(4, start_step=2, num_steps=3)
    batches = iter(sampler)
    next(batches)
    assert sampler.position == 12
    assert len(sampler) == 3 and len(list(sampler)) == 3
    assert sampler.state_dict() == {"position": 20, "global_batch_size": 4}


@pytest.mark.parametrize("ranks", [1, 2, 3, 6])
def test_global_batch_is_the_same_for_any_process_layout(ranks):
    global_batch = 12
    sizes = [global_batch // ranks + (1 if r < global_batch % ranks else 0) for r in range(ranks)]
    offsets = [sum(sizes[:r]) for r in range(ranks)]
    per_rank = [take(GlobalBatchSampler(global_batch, 3, offsets[r], sizes[r]), 2) for r in range(ranks)]
    for step in range(2):
        union = [p for r in range(ranks) for p in per_rank[r][step]]
        assert union == list(range((3 + step) * 12, (4 + step) * 12))
        assert union == [p for r in range(ranks) for p in batch_positions(3 + step, 12, offsets[r], sizes[r])]


def test_bad_rank_slice_is_rejected():
    with pytest.raises(ValueError):
        GlobalBatchSampler(4, rank_offset=3, rank_count=2)


def test_epochs_reshuffle_deterministically():
    order = EpochOrder(50, seed=1)
    first = [order.locate(p)[1] for p in range(50)]
    second = [order.locate(p)[1] for p in range(50, 100)]
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second and first != list(range(50))
    assert epoch_permutation(1, 1, 50).tolist() == second
    assert [EpochOrder(50, seed=1).locate(p)[1] for p in range(50, 100)] == second  # fresh object, same order
    assert EpochOrder(5, seed=1, shuffle=False).locate(7) == (1, 2)
