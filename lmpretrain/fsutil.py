"""Putting a finished directory in place of another, for everything the toolkit writes atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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
