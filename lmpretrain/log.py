"""Rank-aware logging and progress bars: info and tqdm on rank 0 only."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def global_rank() -> int:
    """This process's rank in a torchrun / torch.distributed.launch job (0 when launched plainly)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return global_rank() == 0


class _BarAwareHandler(logging.StreamHandler):
    """Writes each record on a line of its own: on a terminal through ``tqdm.write``, which clears the progress bars
    first and draws them again after (a plain write would glue the record to a bar's line)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not _on_terminal(self.stream):
            super().emit(record)
            return
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


def _on_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr: INFO on rank 0, WARNING and above on the other ranks (prefixed with the rank)."""
    rank = global_rank()
    fmt = _FORMAT if rank == 0 else f"[rank {rank}] {_FORMAT}"
    handler = _BarAwareHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, handlers=[handler], force=True)
    for noisy in ("transformers", "torch.distributed", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:  # transformers' own bars (e.g. "Writing model shards") would interleave with ours
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


PLAIN_PROGRESS_S = 30.0  # between two progress lines when stderr is not a terminal


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, **kwargs):
    """Progress on rank 0 only: a tqdm bar on a terminal; when stderr is not one (a log file, a pipe), a plain log
    line every ``PLAIN_PROGRESS_S`` seconds instead (no carriage returns in the file); nothing at all with
    LMP_NO_PROGRESS set."""
    disable = not is_main_process() or bool(os.environ.get("LMP_NO_PROGRESS"))
    if not disable and not _on_terminal(sys.stderr):
        return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable,
                dynamic_ncols=True, **kwargs)


class PlainProgress:
    """The part of tqdm's interface the toolkit uses (``update``, ``set_postfix``, ``n``, ``close``, iteration, a
    context manager), logging ``desc: n/total unit (p%), <elapsed> elapsed, eta <t>`` at most every
    ``PLAIN_PROGRESS_S`` seconds, and once more at the end of a phase that logged before."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit.strip() or "it"
        self.n = self.start_n = initial
        self.postfix = ""
        self.started = self.last = time.monotonic()
        self.said = False
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= PLAIN_PROGRESS_S:
            self.last = now
            self._say(now)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed and self.said:
            self._say(time.monotonic())
        self.closed = True

    def _say(self, now: float) -> None:
        elapsed, done = now - self.started, self.n - self.start_n
        count = f"{self.n:,.0f}/{self.total:,.0f} {self.unit}" if self.total else f"{self.n:,.0f} {self.unit}"
        if self.total:
            count += f" ({100 * self.n / self.total:.0f}%)"
        eta = ""
        if self.total and done > 0 and self.n < self.total:
            eta = f", eta {duration(elapsed / done * (self.total - self.n))}"
        postfix = f", {self.postfix}" if self.postfix else ""
        logging.getLogger("lmpretrain.progress").info("%s: %s, %s elapsed%s%s", self.desc or "progress", count,
                                                      duration(elapsed), eta, postfix)
        self.said = True


def duration(seconds: float) -> str:
    """A short human duration: ``42s``, ``3m10s``, ``1h05m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@contextlib.contextmanager
def heartbeat(message: str, *, logger: logging.Logger, first_s: float = 30.0, every_s: float = 30.0,
              level: int = logging.INFO) -> Iterator[None]:
    """While the body runs, log ``message (<elapsed> elapsed)`` after ``first_s`` seconds and every ``every_s``
    seconds after (from a daemon thread): a phase that reports no progress of its own (a library's training, a
    wait for peers) is never silent for long."""
    stop, started = threading.Event(), time.monotonic()

    def beat() -> None:
        wait = first_s
        while not stop.wait(wait):
            logger.log(level, "%s (%s elapsed)", message, duration(time.monotonic() - started))
            wait = every_s

    thread = threading.Thread(target=beat, name="lmpretrain-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class MetricsWriter:
    """TensorBoard scalars under ``<model_dir>/runs/<run_name>/``, written by rank 0 only (a no-op elsewhere)."""

    def __init__(self, log_dir: str | None, *, purge_step: int | None = None):
        self._writer = None
        if log_dir is not None and is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=log_dir, purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def strict(value):
    """``value`` with every NaN/inf float replaced by None: JSON has no such literals, and strict parsers reject
    Python's ``NaN``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def strict_dumps(value, **kwargs) -> str:
    """Strict JSON (non-finite numbers written as null)."""
    return json.dumps(strict(value), allow_nan=False, **kwargs)


class JsonlLog:
    """``train_log.jsonl``: one strict JSON object per logged step (rank 0). A resume drops lines past its step."""

    def __init__(self, path: str, *, resume_step: int = 0):
        from pathlib import Path

        self._path = Path(path) if is_main_process() else None
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step and self._path.is_file():
            for line in self._path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except ValueError:
                    break  # a line cut by a crash ends the usable log
        self._path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    def write(self, record: dict) -> None:
        if self._path is not None:
            with open(self._path, "a", encoding="utf-8") as f:
                f.write(strict_dumps(record) + "\n")
