"""What train_tokenizer.py does around a training: the output dir belongs to one run at a time, and a stop by
SIGTERM or SIGINT ends with one line saying what was left.

The lock is run_pretraining.py's (:class:`run_dir.ModelDirLock`: O_EXCL, the holder's host and pid, a dead holder's
lock taken over), kept beside the dir as ``.<dir>.lock`` because a training replaces the dir as a whole. Under it,
temporary dirs that killed runs left are swept (``training.sweep_stale_temp_dirs``, called by the training itself).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from .errors import Preempted
from .run_dir import ModelDirLock
from .tokenization.tokenizer_dir import META_FILE
from .tokenization.training import PRETOKENIZED_PREFIX

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def _identity(model_dir: Path) -> tuple[int, int] | None:
    """The tokenizer's metadata file as found (inode, mtime): a new tokenizer renamed into place changes it."""
    try:
        info = (model_dir / META_FILE).stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns


def _ours_left(model_dir: Path, intermediate_dir: str | None) -> list[str]:
    owner = f"{socket.gethostname()}-{os.getpid()}-"
    found = list(model_dir.parent.glob(f".{model_dir.name}.tmp-{owner}*"))
    if intermediate_dir is not None:
        found += Path(intermediate_dir).glob(f"{PRETOKENIZED_PREFIX}{owner}*")
    return [str(p) for p in found]


def stopped_message(signal_name: str, model_dir: Path, before, intermediate_dir: str | None) -> str:
    after = _identity(model_dir)
    if after is not None and after != before:
        state = f"the new tokenizer in {model_dir} is complete (the signal came after it was written)"
    elif before is not None:
        state = f"--model_dir {model_dir} is as it was (the tokenizer there was not replaced)"
    else:
        state = f"nothing was written to --model_dir {model_dir}"
    left = _ours_left(model_dir, intermediate_dir)
    temp = (f"left {', '.join(left)} (the next run into {model_dir} removes it)" if left
            else "its temporary files were removed")
    return f"stopped by {signal_name}: {state}; {temp}"


def _raise_preempted(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the clean-up
    raise Preempted(signal.Signals(signum).name)


@contextlib.contextmanager
def tokenizer_output(model_dir: str | Path, intermediate_dir: str | None = None) -> Iterator[None]:
    """Hold ``model_dir``'s lock while the body trains into it; a SIGTERM or SIGINT unwinds the body (its temporary
    dirs are removed on the way out) and exits with one ``error:`` line and 143 / 130."""
    model_dir = Path(model_dir)
    before = _identity(model_dir)
    previous = signal.signal(signal.SIGTERM, _raise_preempted)
    try:
        with ModelDirLock(model_dir, model_dir.parent / f".{model_dir.name}.lock"):
            yield
    except (Preempted, KeyboardInterrupt) as stop:
        name = "SIGINT" if isinstance(stop, KeyboardInterrupt) else str(stop)
        print(f"error: {stopped_message(name, model_dir, before, intermediate_dir)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CODES.get(name, 1)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
