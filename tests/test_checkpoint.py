import errno
import json

import pytest

from lmpretrain.checkpoint import (
    MANIFEST,
    CheckpointError,
    clean_partial_checkpoints,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
    verify_checkpoint,
)
from lmpretrain.errors import UserError


def _writer(payload: bytes):
    def write(tmp):
        (tmp / "model.safetensors").write_bytes(payload)
        (tmp / "config.json").write_text(json.dumps({"a": 1}))
    return write


def test_save_verify_and_rotate(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, _writer(bytes([step]) * 100), total_limit=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 30]
    manifest = verify_checkpoint(tmp_path / "checkpoint-30")
    assert manifest["step"] == 30 and set(manifest["files"]) == {"model.safetensors", "config.json"}
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_truncated_checkpoint_falls_back_with_warning(tmp_path, caplog):
    save_checkpoint(tmp_path, 1, _writer(b"x" * 50))
    save_checkpoint(tmp_path, 2, _writer(b"y" * 50))
    with open(tmp_path / "checkpoint-2" / "model.safetensors", "r+b") as f:
        f.truncate(10)
    with pytest.raises(CheckpointError, match="truncated"):
        verify_checkpoint(tmp_path / "checkpoint-2")
    path, _ = latest_checkpoint(tmp_path)
    assert path.name == "checkpoint-1"
    assert "falling back to checkpoint-1" in caplog.text


def test_corrupt_and_incomplete_are_named(tmp_path):
    save_checkpoint(tmp_path, 5, _writer(b"z" * 64))
    target = tmp_path / "checkpoint-5" / "model.safetensors"
    target.write_bytes(b"Z" * 64)  # same size, different content
    with pytest.raises(CheckpointError, match="checksum"):
        verify_checkpoint(tmp_path / "checkpoint-5")
    (tmp_path / "checkpoint-5" / MANIFEST).unlink()
    with pytest.raises(UserError, match="checkpoint-5: .*incomplete"):
        latest_checkpoint(tmp_path)


def test_no_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        latest_checkpoint(tmp_path)


def test_full_disk_keeps_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 1, _writer(b"a" * 10))

    def full_disk(tmp):
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match="no space left on device.*checkpoint-1 is intact"):
        save_checkpoint(tmp_path, 2, full_disk)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    verify_checkpoint(tmp_path / "checkpoint-1")


def test_interrupted_write_leaves_only_hidden_temp(tmp_path):
    def crash(tmp):
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 3, crash)
    assert list_checkpoints(tmp_path) == []
    (tmp_path / ".checkpoint-4.tmp-999").mkdir()  # what a kill -9 would leave
    clean_partial_checkpoints(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_as_libraries_report_it(tmp_path, monkeypatch):
    """safetensors and torch.save do not raise OSError on a full disk; it is still reported as one."""
    from safetensors import SafetensorError

    from lmpretrain import checkpoint

    save_checkpoint(tmp_path, 1, _writer(b"a" * 10))

    def safetensors_full(tmp):
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(UserError, match="checkpoint-2: no space left on device; the previous checkpoint checkpoint-1"):
        save_checkpoint(tmp_path, 2, safetensors_full)

    def torch_full(tmp):
        (tmp / "training_state.pt").write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    class Usage:
        free = 0

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(UserError, match="checkpoint-3: no space left on device .RuntimeError"):
        save_checkpoint(tmp_path, 3, torch_full)
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with room on the disk it is a bug: raised as is
        save_checkpoint(tmp_path, 4, torch_full)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_rotation_never_leaves_a_half_deleted_checkpoint(tmp_path, monkeypatch):
    from lmpretrain import checkpoint

    for step in (1, 2):
        save_checkpoint(tmp_path, step, _writer(bytes([step]) * 10))
    monkeypatch.setattr(checkpoint.shutil, "rmtree", lambda path, ignore_errors=False: None)  # as if killed there
    save_checkpoint(tmp_path, 3, _writer(b"c" * 10), total_limit=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]  # checkpoint-1 was renamed away before deletion
    monkeypatch.undo()
    clean_partial_checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]


def test_checkpoint_moved_aside_by_an_interrupted_resave_is_restored(tmp_path):
    save_checkpoint(tmp_path, 7, _writer(b"x" * 10))
    # a kill between "move the old checkpoint-7 aside" and "rename the new one into place"
    (tmp_path / "checkpoint-7").rename(tmp_path / ".checkpoint-7.old-12345")
    (tmp_path / ".checkpoint-7.tmp-12345").mkdir()
    clean_partial_checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-7"]
    verify_checkpoint(tmp_path / "checkpoint-7")
