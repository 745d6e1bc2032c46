"""File-system helpers shared by everything the toolkit writes: content hashes, atomic file and dir replacement."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

HASH_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes as stored (a ``.gz`` file is hashed compressed), streamed in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a hidden ``.<name>.tmp-<pid>`` beside it and one rename: a reader sees
    the old file or the whole new one, never a part. The temporary file is removed if writing fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_dir(new: Path, target: Path) -> None:
    """Rename the complete dir ``new`` to ``target``. An existing ``target`` is first moved aside to
    ``.<name>.old-<pid>`` (never merged into) and removed afterwards, so a crash at any moment leaves either
    the old or the new dir under ``target``'s name, or the old one beside it, which a later run can put back."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
