"""Numeric precision: ``--fp16_type`` 0–3 (the levels of NVIDIA Apex AMP) and bf16, through ``torch.amp``.

| level | Apex meaning                         | what we do                                                        |
|-------|--------------------------------------|-------------------------------------------------------------------|
| 0     | O0, fp32                             | fp32                                                              |
| 1     | O1, mixed precision                  | fp16 autocast + dynamic loss scaling (``torch.amp.GradScaler``)   |
| 2     | O2, "almost fp16" (fp32 master copy) | the same as 1: torch.amp keeps fp32 master weights and runs the   |
|       |                                      | matmuls in fp16, which is what O2 buys, without its fp16 params   |
| 3     | O3, pure fp16 (loss scale 1)         | the model cast to fp16, no autocast, no loss scaling              |

bf16 (``--bf16``) uses bf16 autocast with fp32 weights and no loss scaling. fp16 needs a CUDA device.

Under ``--fsdp`` (the model sharded over processes) the same levels, the FSDP way (:meth:`Precision.fsdp_policy`):
the sharded parameters stay the fp32 master weights; each unit gathers them cast to bf16/fp16 for its forward and
backward (``MixedPrecisionPolicy(param_dtype=...)``: half the bytes gathered) and reduce-scatters its gradients in
fp32 (``reduce_dtype``) into fp32 gradient shards. Autocast stays on around the forward, so the ops it keeps in fp32
(softmax, layer norm, the losses) are in fp32 as they are unsharded. fp16 loss scaling uses
``ShardedGradScaler``, which all-reduces its inf/NaN finding: an overflow in any process's gradient shard skips the
step on every process (:meth:`Precision.shard_scaler`); a unit's gradient being fp16 until its fp32 reduce (autocast's
are fp32), an fp16 run may skip a step or two more at its start while the scaler finds its scale. Level 3 (fp16
weights) gathers its fp16 shards as they are and reduces in fp32 too.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .errors import UserError
from .sharding import full_tensor


@dataclass
class Precision:
    name: str
    autocast_dtype: torch.dtype | None
    model_dtype: torch.dtype
    scaler: torch.amp.GradScaler | None
    device_type: str

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)

    def fsdp_policy(self):
        """FSDP2's ``MixedPrecisionPolicy`` for this precision (None for fp32): compute in the autocast dtype (level
        3: the weights' own fp16), gradients reduced in fp32."""
        if self.autocast_dtype is None and self.model_dtype == torch.float32:
            return None
        from torch.distributed.fsdp import MixedPrecisionPolicy

        return MixedPrecisionPolicy(param_dtype=self.autocast_dtype, reduce_dtype=torch.float32)

    def shard_scaler(self) -> None:
        """For a sharded model: the loss scaler becomes a ``ShardedGradScaler`` (same settings and state-dict
        format), whose inf/NaN check is all-reduced over the processes, so that they all skip the same steps."""
        if self.scaler is None:
            return
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        sharded = ShardedGradScaler(self.device_type)
        sharded.load_state_dict(self.scaler.state_dict())
        self.scaler = sharded

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (times the loss scale, with fp16 loss scaling)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def clip(self, optimizer: torch.optim.Optimizer, parameters: Iterable[torch.Tensor],
             max_grad_norm: float) -> torch.Tensor:
        """Unscale the gradients (fp16 loss scaling) and clip them to ``max_grad_norm``; the total norm before
        clipping, left on the device (the loop reads it with the step's other values, in one synchronisation)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        return full_tensor(norm)  # FSDP2: the norm of sharded gradients is a DTensor, summed over the shards here

    def apply(self, optimizer: torch.optim.Optimizer, *, grad_norm: float, loss_finite: bool = True) -> bool:
        """Step the optimizer after :meth:`clip`, unless the step is non-finite; returns whether it stepped.

        With a loss scaler, the scaler skips a step whose unscaled gradients hold an inf/NaN (and lowers its scale):
        exactly the steps whose total gradient norm is non-finite, which is how a skip is detected here without
        reading the scale back. Otherwise a step with a non-finite gradient norm, or a non-finite loss on any
        process (``loss_finite``), is skipped here, leaving the weights as they were."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
            return math.isfinite(grad_norm)
        if loss_finite and math.isfinite(grad_norm):
            optimizer.step()
            return True
        return False

    def step(self, optimizer: torch.optim.Optimizer, parameters: Iterable[torch.Tensor], max_grad_norm: float, *,
             loss_finite: bool = True) -> tuple[float, bool]:
        """:meth:`clip` then :meth:`apply`: returns ``(grad_norm, stepped)``."""
        grad_norm = float(self.clip(optimizer, parameters, max_grad_norm))
        return grad_norm, self.apply(optimizer, grad_norm=grad_norm, loss_finite=loss_finite)


def make_precision(fp16_type: int, bf16: bool, device: torch.device) -> Precision:
    if fp16_type not in (0, 1, 2, 3):
        raise UserError(f"--fp16_type must be 0, 1, 2 or 3 (got {fp16_type})")
    if fp16_type and bf16:
        raise UserError("--fp16_type and --bf16 exclude each other; pick one")
    if fp16_type and device.type != "cuda":
        raise UserError(f"--fp16_type {fp16_type} needs a CUDA GPU (this run is on {device}); "
                        "use --fp16_type 0, or --bf16 on a CPU that supports it")
    if bf16:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--bf16: this GPU does not support bfloat16; use --fp16_type 1")
        return Precision("bf16", torch.bfloat16, torch.float32, None, device.type)
    if fp16_type in (1, 2):
        return Precision(f"fp16 (level {fp16_type})", torch.float16, torch.float32,
                         torch.amp.GradScaler(device.type), device.type)
    if fp16_type == 3:
        return Precision("pure fp16 (level 3)", None, torch.float16, None, device.type)
    return Precision("fp32", None, torch.float32, None, device.type)
