"""Worker processes, started one way: a ``ProcessPoolExecutor``, so that a worker that dies (killed for lack of
memory, say) is an error (``BrokenProcessPool``), not a hang as with ``multiprocessing.Pool``, which quietly replaces
the dead worker and waits forever for its task.

``inherit=True`` forks where the platform can: the workers start in milliseconds from the parent's memory (a loaded
tagger, a warm word cache, the dictionary's pages shared) and the initializer's arguments are not pickled. Otherwise
workers are spawned, and rebuild what they need from picklable arguments.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .errors import UserError

__all__ = ["BrokenProcessPool", "ordered_map", "worker_died", "worker_pool"]


def worker_pool(num_workers: int, initializer: Callable | None = None, initargs: tuple = (), *,
                inherit: bool = False) -> ProcessPoolExecutor:
    """A pool of ``num_workers`` processes, each running ``initializer(*initargs)`` once when it starts."""
    method = "fork" if inherit and os.name != "nt" else "spawn"
    return ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context(method), initializer=initializer,
                               initargs=initargs)


def ordered_map(pool: ProcessPoolExecutor, function: Callable, items: Iterable, max_in_flight: int) -> Iterator:
    """Like ``pool.map`` (results in order) but reads ahead at most ``max_in_flight`` items: bounded memory."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(function, item))
        if len(pending) >= max_in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def worker_died(error: BaseException, doing: str, kind: str, num_workers: int, flag: str) -> UserError:
    """The one message for a pool whose worker died, e.g. ``doing="tokenizing the corpus"``, ``kind="tokenizing"``."""
    return UserError(f"a process {doing} died unexpectedly (killed for lack of memory?) or could not start ({error}); "
                     f"{num_workers} {kind} processes were running: retry with fewer ({flag})")
