"""File-system helpers shared by everything the toolkit writes: content hashes, atomic file and dir replacement,
and the modes a finished output gets.

Outputs are written privately (``tempfile.mkdtemp`` makes 0700 dirs, safetensors writes 0600 files) and renamed into
place when complete; :func:`publish` gives them, just before that rename, the modes the user's umask gives any file
(0644 / 0755 under umask 022, 0600 / 0700 under 077), so that a teammate can load a model or tokenizer the umask
lets them read."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

HASH_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes as stored (a ``.gz`` file is hashed compressed), streamed in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def process_umask() -> int:
    """This process's umask, read without changing it (``/proc/self/status`` on Linux; elsewhere set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(path: str | Path) -> None:
    """Give ``path`` (a file, or a dir and everything under it) the modes the umask gives a new file: dirs and
    executable files 0777 less the umask, other files 0666 less the umask. Symbolic links are left alone."""
    mask = process_umask()
    root = Path(path)

    def fix(entry: Path) -> None:
        info = entry.lstat()
        if stat.S_ISLNK(info.st_mode):
            return
        full = 0o777 if stat.S_ISDIR(info.st_mode) or info.st_mode & 0o111 else 0o666
        if stat.S_IMODE(info.st_mode) != full & ~mask:
            os.chmod(entry, full & ~mask)

    fix(root)
    if root.is_dir() and not root.is_symlink():
        for directory, dirs, files in os.walk(root):
            for name in dirs + files:
                fix(Path(directory) / name)


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
    the old or the new dir under ``target``'s name, or the old one beside it, which a later run can put back.
    ``new`` gets the umask's modes first (:func:`publish`): it was written privately."""
    publish(new)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def process_is_running(pid: int) -> bool:
    """Whether a process of this host exists (one we may not signal counts as running): whether the owner of a
    temporary file named after its pid may still write it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
