import pytest

from lmpretrain.distributed import batch_layout, split_node_batch
from lmpretrain.errors import UserError


def test_split_node_batch_remainder_goes_to_first_ranks():
    assert split_node_batch(5, 2) == [3, 2]
    assert split_node_batch(8, 4) == [2, 2, 2, 2]
    with pytest.raises(UserError, match="cannot be split"):
        split_node_batch(1, 2)


def test_layout_covers_global_batch_once():
    sizes = {0: 3, 1: 5}
    slices = []
    for node in (0, 1):
        for local in (0, 1):
            node_batch, per_device, offset, global_batch = batch_layout(
                sizes, num_nodes=2, node_rank=node, local_rank=local, local_world_size=2)
            assert global_batch == 8 and node_batch == sizes[node]
            slices.extend(range(offset, offset + per_device))
    assert slices == list(range(8))


def test_default_entry_and_missing_node():
    assert batch_layout({-1: 16}, num_nodes=2, node_rank=1, local_rank=0, local_world_size=1)[3] == 32
    with pytest.raises(UserError, match="no entry for node rank 1"):
        batch_layout({0: 4}, num_nodes=2, node_rank=1, local_rank=0, local_world_size=1)
