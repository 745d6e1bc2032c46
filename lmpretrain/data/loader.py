"""The input pipeline: each step's micro-batches (instances + masking + collation), built ahead of the loop.

``StepBatches`` wraps a ``torch.utils.data.DataLoader`` whose batch sampler yields, step after step from the resume
position, this process's micro-batch position lists (``positions_for_step`` split into micro-batches), and whose
collate function is the family's collator followed by :func:`count_units`. With ``workers > 0`` the batches are
built in background processes while the loop computes; with 0 they are built in the loop's process, on demand.

Why the batches are the same for any number of workers: an instance and its masks are pure functions of the seed
and the sample's global position (``rng.uniform`` is counter-based; no worker-local random state is read), and the
DataLoader returns batches in sampler order. The DataLoader draws a base seed for its workers from its own
generator, never from the global torch RNG, so creating it (at the start or at a resume) does not move dropout's
random stream either.

Workers ignore SIGTERM / SIGUSR1 (the loop's process decides what a preemption does, and shuts them down), are
shut down on every exit of the ``with`` block, and exit by themselves within seconds when the loop's process dies
(the DataLoader's workers watch their parent).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from .sampler import positions_for_step

_PREEMPT_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)


def count_units(batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """How many units each kind of loss term averages over in this micro-batch (read on the CPU: free there)."""
    labels = batch.get("labels")
    units = {"samples": float(batch["input_ids"].shape[0]), "tokens": float(batch["attention_mask"].sum())}
    if labels is not None:
        units["masked"] = float((labels != -100).sum())
        units["next_tokens"] = float((labels[:, 1:] != -100).sum())
    return units


def default_dataloader_workers(local_processes: int, cores: int | None = None) -> int:
    """``--dataloader_workers`` when not given: ``min(2, cores per local process - 1)``, at least 0. Two workers
    outrun a GPU's appetite at the issue's measured ~10,000 sequences/s per core; the minus one leaves the loop's
    own process a core. On a 2-core machine with one process that is 1; with 2 processes (or 1 core), 0."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(2, cores // max(1, local_processes) - 1))


def micro_batch_positions(positions: list[int], parts: int) -> list[list[int]]:
    """Split a process's batch into ``parts`` nearly equal micro-batches (none empty), in order."""
    parts = max(1, min(parts, len(positions)))
    base, extra = divmod(len(positions), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append(positions[start:end])
        start = end
    return out


class _StepSampler:
    """Yields the micro-batch position lists of steps ``first_step, first_step + 1, ...`` up to ``steps`` steps."""

    def __init__(self, next_position: int, steps: int, layout, accumulation: int):
        self.next_position, self.steps, self.layout, self.accumulation = next_position, steps, layout, accumulation

    def __iter__(self) -> Iterator[list[int]]:
        for k in range(self.steps):
            positions = positions_for_step(self.next_position + k * self.layout.global_batch_size, self.layout)
            yield from micro_batch_positions(positions, self.accumulation)

    def __len__(self) -> int:
        return self.steps * len(micro_batch_positions(list(range(self.layout.per_device_batch_size)),
                                                      self.accumulation))


class _Collate:
    """The collator, then the unit counts (picklable: workers may be spawned)."""

    def __init__(self, collator: Callable):
        self.collator = collator

    def __call__(self, instances: list[dict]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        batch = self.collator(instances)
        return batch, count_units(batch)


def _worker_init(_worker_id: int) -> None:
    for sig in _PREEMPT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StepBatches:
    """``with StepBatches(...) as batches: for step ...: micro = batches.next_step()`` — a list of
    ``(batch, units)`` per micro-batch, ``batch`` already on ``layout.device`` (copied ``non_blocking`` from
    pinned memory on CUDA)."""

    def __init__(self, dataset, collator: Callable, layout, *, next_position: int, steps: int, accumulation: int,
                 workers: int, prefetch_steps: int = 2):
        self.layout = layout
        self.micro_per_step = len(micro_batch_positions(list(range(layout.per_device_batch_size)), accumulation))
        self.workers = workers
        options = {}
        if workers > 0:  # prefetch_factor counts micro-batches per worker: keep ~prefetch_steps steps in flight
            options = dict(prefetch_factor=max(2, -(-prefetch_steps * self.micro_per_step // workers)),
                           worker_init_fn=_worker_init)
        self.loader = DataLoader(dataset, batch_sampler=_StepSampler(next_position, steps, layout, accumulation),
                                 collate_fn=_Collate(collator), num_workers=workers,
                                 pin_memory=layout.device.type == "cuda", generator=torch.Generator().manual_seed(0),
                                 **options)
        self._iterator = None

    def __enter__(self) -> StepBatches:
        self._iterator = iter(self.loader)
        return self

    def next_step(self) -> list[tuple[dict[str, torch.Tensor], dict[str, float]]]:
        micro = [next(self._iterator) for _ in range(self.micro_per_step)]
        device = self.layout.device
        return [({k: v.to(device, non_blocking=True) for k, v in batch.items()}, units) for batch, units in micro]

    def close(self) -> None:
        """Stop the workers now (also on errors and preemption), not whenever the iterator is collected."""
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def __exit__(self, *exc) -> None:
        self.close()
