"""Worker processes, started one way: a ``ProcessPoolExecutor``, so that a worker that dies (killed for lack of
memory, say) is an error (``BrokenProcessPool``), not a hang as with ``multiprocessing.Pool``, which quietly replaces
the dead worker and waits forever for its task.

``inherit=True`` forks where the platform can: the workers start in milliseconds from the parent's memory (a loaded
tagger, a warm word cache, the dictionary's pages shared) and the initializer's arguments are not pickled. Otherwise
workers are spawned, and rebuild what they need from picklable arguments.

Workers die with their parent, ``kill -9`` of the parent included (nothing would otherwise end them: they wait on a
queue whose other end is gone): on Linux the kernel sends them SIGKILL when the parent ends (``prctl(PR_SET_PDEATHSIG)``
through ctypes, set where the pool is made in the main thread, since the signal follows the thread that started the
worker), and everywhere a thread in each worker checks every second that its parent is still the one that started it
(the check PyTorch's DataLoader workers make, ``torch/utils/data/_utils/worker.py``'s ``ManagerWatchdog``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
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
    deathsig = threading.current_thread() is threading.main_thread()
    return ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context(method),
                               initializer=_start_worker, initargs=(os.getpid(), deathsig, initializer, initargs))


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_CHECK_S = 1.0


_PREEMPT_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)


def _start_worker(parent_pid: int, deathsig: bool, initializer: Callable | None, initargs: tuple) -> None:
    die_with_parent(parent_pid, deathsig=deathsig)
    # a preemption signal sent to the whole job (as clusters do) is the parent's to act on: it shuts the pool down
    # (a forked worker would otherwise run the parent's handler, a spawned one die and break the pool)
    for sig in _PREEMPT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def die_with_parent(parent_pid: int, *, deathsig: bool = True) -> None:
    """End this process when ``parent_pid`` ends: PR_SET_PDEATHSIG on Linux, and a daemon thread that checks
    ``os.getppid()`` every second (a parent that died before the prctl, or another platform)."""
    if deathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the thread below still ends this worker
    if os.getppid() != parent_pid:  # the parent died before the prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="lmpretrain-parent-watchdog", daemon=True).start()


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
    return UserError(f"a process {doing} died unexpectedly (killed for lack of memory, or a crash in a library) or "
                     f"could not start ({error}); {num_workers} {kind} processes were running: retry with fewer "
                     f"({flag})")
