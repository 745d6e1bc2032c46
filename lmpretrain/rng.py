"""Counter-based random numbers: a pure function of (seed, sample position, token index, stream).

Masking and ELECTRA's generator sampling draw their randomness from here rather than from a
stateful generator, so a sample gets the same random numbers whichever process handles it,
whatever batch it lands in, and whether the run was resumed or not. A fresh choice each epoch
comes from the sample *position* (its index in the run's stream of samples), not its dataset index.

The hash is Chris Wellons' "lowbias32" applied in a chain; everything is done on 32-bit values
held in int64 tensors, so it runs identically on the CPU and on CUDA.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def hash_bits(seed: int, positions: torch.Tensor, length: int, stream: int) -> torch.Tensor:
    """32 random bits (in int64) of shape ``[len(positions), length]``."""
    positions = positions.to(torch.int64).reshape(-1, 1)
    index = torch.arange(length, dtype=torch.int64, device=positions.device).reshape(1, -1)
    h = _mix32(torch.full_like(positions, (int(seed) * 0x9E3779B1 + int(stream) * 0x85EBCA77) & _MASK32))
    h = _mix32(h ^ (positions & _MASK32))
    h = _mix32(h ^ ((positions >> 32) & _MASK32) ^ 0x27D4EB2F)
    return _mix32(h ^ index)


def uniform(seed: int, positions: torch.Tensor, length: int, stream: int) -> torch.Tensor:
    """Uniform floats in [0, 1) of shape ``[len(positions), length]``, 24 random bits each."""
    return (hash_bits(seed, positions, length, stream) >> 8).to(torch.float32) * (1.0 / (1 << 24))
