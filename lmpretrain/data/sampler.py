"""Deterministic data order: a global sample position -> (epoch, dataset index), and batches of positions.

The run draws samples at positions 0, 1, 2, ... A position's epoch is ``position // len(dataset)`` and its index is
that epoch's permutation (seeded from ``(seed, epoch)``) at ``position % len(dataset)``. The global batch of step
``s`` is positions ``[s * G, (s + 1) * G)`` whatever the number of processes, so resuming at a saved step (or
position) continues exactly, on any process layout.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
    """The order of the dataset's indices in ``epoch`` (a pure function of seed, epoch and size)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x5A3F]).permutation(size)


class EpochOrder:
    """Maps global positions to dataset indices; keeps the last epoch's permutation (size x 8 bytes)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        if size <= 0:
            raise ValueError("an empty dataset has no order")
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self._epoch = -1
        self._permutation: np.ndarray | None = None

    def locate(self, position: int) -> tuple[int, int]:
        """(epoch, dataset index) of a global sample position."""
        if position < 0:
            raise IndexError(f"sample position {position} is negative")
        epoch, offset = divmod(int(position), self.size)
        if not self.shuffle:
            return epoch, offset
        if epoch != self._epoch:
            self._permutation = epoch_permutation(self.seed, epoch, self.size)
            self._epoch = epoch
        return epoch, int(self._permutation[offset])


def batch_positions(step: int, global_batch_size: int, start: int = 0, count: int | None = None) -> list[int]:
    """The positions this process draws at ``step``: ``[step * G + start, step * G + start + count)``."""
    count = global_batch_size - start if count is None else count
    base = step * global_batch_size + start
    return list(range(base, base + count))


class GlobalBatchSampler:
    """A ``batch_sampler`` for torch's DataLoader yielding this process's share of each global batch.

    ``rank_offset``/``rank_count`` select this process's slice of the global batch (its first index and size).
    ``position`` is the global index of the first sample of the step after the last one yielded (a DataLoader
    prefetches, so a trainer should save the position of the step it last *trained*: ``(step + 1) * G``).
    """

    def __init__(self, global_batch_size: int, start_step: int = 0, rank_offset: int = 0,
                 rank_count: int | None = None, *, num_steps: int | None = None, start_position: int | None = None):
        if global_batch_size <= 0:
            raise ValueError("global_batch_size must be positive")
        self.global_batch_size = global_batch_size
        self.rank_offset = rank_offset
        self.rank_count = global_batch_size - rank_offset if rank_count is None else rank_count
        if not 0 <= rank_offset < global_batch_size or rank_offset + self.rank_count > global_batch_size:
            raise ValueError(f"rank slice [{rank_offset}, {rank_offset + self.rank_count}) is outside the global "
                             f"batch of {global_batch_size}")
        self.num_steps = num_steps
        self.start_position = start_step * global_batch_size if start_position is None else start_position
        self.position = self.start_position

    def __iter__(self) -> Iterator[list[int]]:
        step = 0
        self.position = self.start_position
        while self.num_steps is None or step < self.num_steps:
            base = self.start_position + step * self.global_batch_size + self.rank_offset
            step += 1
            self.position = self.start_position + step * self.global_batch_size
            yield list(range(base, base + self.rank_count))

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("an endless GlobalBatchSampler has no length; give num_steps")
        return self.num_steps

    def state_dict(self) -> dict:
        return {"position": self.position, "global_batch_size": self.global_batch_size}
