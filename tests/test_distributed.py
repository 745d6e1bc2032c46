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


LAUNCHER_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "NODE_RANK")


@pytest.fixture
def launcher_env(monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))

    return set_env


def test_the_scripts_node_rank_must_agree_with_the_launchers(launcher_env):
    from lmpretrain.distributed import init_distributed

    # torchrun --nnodes 2 --node_rank 1 ... run_pretraining.py --node_rank 0: both nodes would train node 0's share
    launcher_env(WORLD_SIZE=2, RANK=1, LOCAL_RANK=0, LOCAL_WORLD_SIZE=1, GROUP_RANK=1, GROUP_WORLD_SIZE=2)
    with pytest.raises(UserError, match=r"--node_rank 0 disagrees with the launcher's GROUP_RANK=1"):
        init_distributed({-1: 4}, node_rank=0, device="cpu")
    with pytest.raises(UserError, match=r"--local_rank 1 disagrees with the launcher's LOCAL_RANK=0"):
        init_distributed({-1: 4}, local_rank=1, device="cpu")


def test_a_multi_node_batch_in_one_process_needs_a_chosen_node(launcher_env):
    from lmpretrain.distributed import init_distributed

    launcher_env()
    sizes = {0: 80, 1: 80, 2: 48, 3: 48}
    with pytest.raises(UserError, match=r"batch-size gives batches for nodes 0, 1, 2, 3 \(a multi-node preset\)"):
        init_distributed(sizes, node_rank=-1, device="cpu")
    assert init_distributed(sizes, node_rank=-1, device="cpu", training=False).global_batch_size == 80  # a build
    layout = init_distributed(sizes, node_rank=2, device="cpu")  # node 2's batch, alone
    assert (layout.global_batch_size, layout.per_device_batch_size, layout.node_rank) == (48, 48, 0)
    assert init_distributed({-1: 16}, node_rank=-1, local_rank=-1, device="cpu").global_batch_size == 16
