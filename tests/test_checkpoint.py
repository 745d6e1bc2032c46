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
