"""Deterministic data order: a global sample position -> (epoch, dataset index), and each process's positions.

The run draws samples at positions 0, 1, 2, ... A position's epoch is ``position // len(dataset)`` and its index is
that epoch's permutation (seeded from ``(seed, epoch)``) at ``position % len(dataset)``. The global batch of step
``s`` is positions ``[s * G, (s + 1) * G)`` whatever the number of processes (each takes its contiguous slice),
so resuming at a saved position continues exactly, on any process layout.
"""

from __future__ import annotations

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


def positions_for_step(next_position: int, layout) -> list[int]:
    """This process's global sample positions for the step whose global batch starts at ``next_position``:
    its slice ``[rank_offset, rank_offset + per_device_batch_size)`` of the global batch (``layout``: a
    :class:`lmpretrain.distributed.Layout`). The training loop draws every batch through this function."""
    start = next_position + layout.rank_offset
    return list(range(start, start + layout.per_device_batch_size))
