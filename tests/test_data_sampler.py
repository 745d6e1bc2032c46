"""The sample order training draws (``positions_for_step`` over real process layouts): exact resume, the same
global batch on any layout, epochs reshuffled."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lmpretrain.data import EpochOrder, epoch_permutation, positions_for_step
from lmpretrain.distributed import batch_layout


def layouts(node_batch_sizes: dict[int, int], num_nodes: int, local_world_size: int) -> list[SimpleNamespace]:
    """Every process's layout as init_distributed computes it (batch_layout), in global rank order."""
    out = []
    for node in range(num_nodes):
        for local in range(local_world_size):
            _, per_device, offset, global_batch = batch_layout(node_batch_sizes, num_nodes=num_nodes, node_rank=node,
                                                               local_rank=local, local_world_size=local_world_size)
            out.append(SimpleNamespace(per_device_batch_size=per_device, rank_offset=offset,
                                       global_batch_size=global_batch))
    return out


def run(layout, steps: int, next_position: int = 0) -> list[list[int]]:
    """The positions the training loop draws on one process: it advances next_position by the global batch."""
    drawn = []
    for _ in range(steps):
        drawn.append(positions_for_step(next_position, layout))
        next_position += layout.global_batch_size
    return drawn


def test_resume_at_a_saved_position_continues_exactly():
    single = layouts({-1: 8}, 1, 1)[0]
    full = run(single, 10)
    assert run(single, 4, next_position=6 * 8) == full[6:]
    assert full[0] == list(range(8)) and full[9] == list(range(72, 80))


@pytest.mark.parametrize("sizes, nodes, local", [({-1: 12}, 1, 1), ({-1: 12}, 1, 2), ({-1: 12}, 1, 5),
                                                 ({0: 8, 1: 4}, 2, 1), ({0: 7, 1: 5}, 2, 2), ({-1: 4}, 3, 2)])
def test_global_batch_is_the_same_for_any_process_layout(sizes, nodes, local):
    procs = layouts(sizes, nodes, local)
    global_batch = procs[0].global_batch_size
    per_process = [run(p, 3, next_position=5 * global_batch) for p in procs]
    for step in range(3):
        union = [position for drawn in per_process for position in drawn[step]]
        assert union == list(range((5 + step) * global_batch, (6 + step) * global_batch))


def test_epochs_reshuffle_deterministically():
    order = EpochOrder(50, seed=1)
    first = [order.locate(p)[1] for p in range(50)]
    second = [order.locate(p)[1] for p in range(50, 100)]
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second and first != list(range(50))
    assert epoch_permutation(1, 1, 50).tolist() == second
    assert [EpochOrder(50, seed=1).locate(p)[1] for p in range(50, 100)] == second  # fresh object, same order
    assert EpochOrder(5, seed=1, shuffle=False).locate(7) == (1, 2)
