"""Rank-aware logging and progress bars: info and tqdm on rank 0 only."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def global_rank() -> int:
    """This process's rank in a torchrun / torch.distributed.launch job (0 when launched plainly)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return global_rank() == 0


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr: INFO on rank 0, WARNING and above on the other ranks (prefixed with the rank)."""
    rank = global_rank()
    fmt = _FORMAT if rank == 0 else f"[rank {rank}] {_FORMAT}"
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, format=fmt, stream=sys.stderr, force=True)
    for noisy in ("transformers", "torch.distributed", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, **kwargs) -> tqdm:
    """A tqdm bar shown on rank 0 only (and never when stderr is not a terminal and LMP_NO_PROGRESS is set)."""
    disable = not is_main_process() or bool(os.environ.get("LMP_NO_PROGRESS"))
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable,
                dynamic_ncols=True, **kwargs)
