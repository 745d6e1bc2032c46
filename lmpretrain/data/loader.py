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

A worker sends each micro-batch as one buffer (:class:`PackedBatch`: every tensor's bytes, 8-byte aligned, in one
shared-memory block) and the loop takes views of it. Sending a tensor between processes costs a shared-memory
segment and a file-descriptor hand-over each; with one per batch instead of one per tensor, two workers deliver
1.10-1.17x the sequences/s (``bench/bench_input_pipeline.py --mode layouts --unpacked``, BENCHMARKS.md), and on
CUDA it is one pinned block and one host-to-device copy per micro-batch.

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

_ALIGN = 8  # bytes: every tensor starts at a multiple of the widest element size, so its view is aligned

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


class PackedBatch:
    """A micro-batch's tensors in one uint8 buffer (8-byte aligned, in shared memory when a worker built it) and
    the ``(key, dtype, shape, offset, bytes)`` of each: what a worker sends. The DataLoader's pin-memory thread pins the
    one buffer (``pin_memory``); :meth:`to` copies it to the device once and returns the tensors as views."""

    __slots__ = ("buffer", "spec")

    def __init__(self, buffer: torch.Tensor, spec: tuple):
        self.buffer, self.spec = buffer, spec

    @classmethod
    def pack(cls, batch: dict[str, torch.Tensor], *, shared: bool = False) -> PackedBatch:
        spec, offset = [], 0
        for key, tensor in batch.items():
            size = tensor.numel() * tensor.element_size()
            spec.append((key, tensor.dtype, tuple(tensor.shape), offset, size))
            offset += -(-size // _ALIGN) * _ALIGN
        if shared:  # allocated in shared memory at once, so that sending it copies nothing more
            storage = torch.UntypedStorage._new_shared(max(offset, 1))
            buffer = torch.empty(0, dtype=torch.uint8).set_(storage)[:offset]
        else:
            buffer = torch.empty(offset, dtype=torch.uint8)
        for (_, dtype, _shape, start, size), tensor in zip(spec, batch.values()):
            if size:
                buffer[start:start + size].view(dtype).copy_(tensor.reshape(-1))
        return cls(buffer, tuple(spec))

    def pin_memory(self) -> PackedBatch:
        return PackedBatch(self.buffer.pin_memory(), self.spec)

    def to(self, device: torch.device, non_blocking: bool = False) -> dict[str, torch.Tensor]:
        buffer = self.buffer.to(device, non_blocking=non_blocking)
        out = {}
        for key, dtype, shape, start, size in self.spec:
            out[key] = buffer[start:start + size].view(dtype).view(shape)
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

    def __init__(self, collator: Callable, pack: bool = True):
        self.collator, self.pack = collator, pack

    def __call__(self, instances: list[dict]) -> tuple[dict[str, torch.Tensor] | PackedBatch, dict[str, float]]:
        batch = self.collator(instances)
        units = count_units(batch)
        if self.pack and torch.utils.data.get_worker_info() is not None:  # in a worker: one buffer to send
            return PackedBatch.pack(batch, shared=True), units
        return batch, units


def _worker_init(_worker_id: int) -> None:
    for sig in _PREEMPT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def to_device(batch: dict[str, torch.Tensor] | PackedBatch, device: torch.device) -> dict[str, torch.Tensor]:
    """A micro-batch as the loop's tensors on ``device`` (``non_blocking``: from pinned memory on CUDA); a worker's
    packed one in a single copy."""
    if isinstance(batch, PackedBatch):
        return batch.to(device, non_blocking=True)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class StepBatches:
    """``with StepBatches(...) as batches: for step ...: micro = batches.next_step()`` — a list of
    ``(batch, units)`` per micro-batch, ``batch`` already on ``layout.device`` (copied ``non_blocking`` from
    pinned memory on CUDA)."""

    def __init__(self, dataset, collator: Callable, layout, *, next_position: int, steps: int, accumulation: int,
                 workers: int, prefetch_steps: int = 2, pack: bool = True):
        self.layout = layout
        self.micro_per_step = len(micro_batch_positions(list(range(layout.per_device_batch_size)), accumulation))
        self.workers = workers
        options = {}
        if workers > 0:  # prefetch_factor counts micro-batches per worker: keep ~prefetch_steps steps in flight
            options = dict(prefetch_factor=max(2, -(-prefetch_steps * self.micro_per_step // workers)),
                           worker_init_fn=_worker_init)
        self.loader = DataLoader(dataset, batch_sampler=_StepSampler(next_position, steps, layout, accumulation),
                                 collate_fn=_Collate(collator, pack), num_workers=workers,
                                 pin_memory=layout.device.type == "cuda", generator=torch.Generator().manual_seed(0),
                                 **options)
        self._iterator = None

    def __enter__(self) -> StepBatches:
        self._iterator = iter(self.loader)
        return self

    def next_step(self) -> list[tuple[dict[str, torch.Tensor], dict[str, float]]]:
        micro = [next(self._iterator) for _ in range(self.micro_per_step)]
        device = self.layout.device
        return [(to_device(batch, device), units) for batch, units in micro]

    def close(self) -> None:
        """Stop the workers now (also on errors and preemption), not whenever the iterator is collected."""
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def __exit__(self, *exc) -> None:
        self.close()
