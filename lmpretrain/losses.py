"""A step's arithmetic over processes: each loss term weighted by its share of the global batch's units, the unit
counts summed over processes, and the step's metrics averaged over their own units.

Exactness across layouts: every loss term is a mean over its own units (masked tokens for MLM, samples for NSP,
real tokens for ELECTRA's discriminator, next tokens for a causal LM). Each process sums its units over all
micro-batches of a step, one all-reduce gives the global counts, and each micro-batch's term is weighted by
``local units / global units``. One optimizer step therefore equals a single-process step over the same global
batch, whatever the number of nodes, processes, per-node batch sizes or accumulation steps.
"""

from __future__ import annotations

import torch

from .distributed import all_reduce_sum
from .errors import UserError
from .models import BatchShape


def weighted_loss(out: dict[str, torch.Tensor], terms, weights: dict[str, float], local: dict[str, float],
                  global_units: dict, world_size: int, family=None) -> torch.Tensor:
    """The micro-batch's share of the global-batch loss (times world_size, which DDP's averaging divides out).
    ``terms``: the :class:`~lmpretrain.models.LossTerm` s this preset trains (``Family.loss_terms_for``), each of
    which the model must return (a :class:`UserError` otherwise, at the first step); ``weights``: term name ->
    weight; ``global_units``: floats, or 0-dim float64 tensors on the device (NCCL), never read back here;
    ``family``: the :class:`~lmpretrain.models.Family`, for the error."""
    total = None
    for term in terms:
        if term.name not in out:
            raise missing_term_error(term, family, out)
        count = global_units[term.unit]
        if local[term.unit] == 0 or (not isinstance(count, torch.Tensor) and count == 0):
            continue  # an empty term (e.g. nothing masked here) contributes nothing, not NaN (local > 0: global > 0)
        factor = weights[term.name] * local[term.unit] / count * world_size
        if isinstance(factor, torch.Tensor):  # rounded to the loss's dtype as a Python float would be
            factor = factor.to(out[term.name].dtype)
        part = out[term.name] * factor
        total = part if total is None else total + part
    if total is None:  # no term has units here: a zero that still reaches backward() (DDP expects every rank's)
        total = sum((torch.where(torch.isfinite(v), v * 0.0, torch.zeros_like(v)) for v in out.values()
                     if v.requires_grad), torch.zeros((), device=next(iter(out.values())).device))
    return total


def missing_term_error(term, family, out: dict) -> UserError:
    """A declared loss term the model did not return: the run would report done with it never trained."""
    declared = f"the {family.display} family" if family is not None else "its family"
    cause = (f"the batch probably lacks {term.label!r}, the label its layout declares: the collator did not pass it on"
             if term.label else "its forward does not compute it")
    return UserError(f"the model returned no {term.name!r}, a loss term {declared} declares (it returned "
                     f"{', '.join(sorted(out)) or 'nothing'}); {cause}")


def batch_shape(batch: dict[str, torch.Tensor], units: dict[str, float]) -> BatchShape:
    """What the micro-batch's FLOPs depend on, from its shape and its unit counts (host values)."""
    sequences, length = batch["input_ids"].shape
    masked = batch["masked_index"].numel() if "masked_index" in batch else int(units.get("masked", 0))
    predicted = batch["predicted_index"].numel() if "predicted_index" in batch else int(units.get("next_tokens", 0))
    return BatchShape(sequences, length, masked=masked, predicted=predicted)


def global_units(local: list[dict[str, float]], device: torch.device) -> dict:
    """Each unit's count over all micro-batches of all processes (one all-reduce). The local counts come from the
    collator, on the CPU; summed on the CPU (gloo, one process) they are floats, under NCCL 0-dim tensors that stay
    on the GPU (sent there from pinned memory without waiting)."""
    unit_names = sorted(local[0])
    counts = torch.tensor([[u[n] for n in unit_names] for u in local], dtype=torch.float64).sum(0)
    if device.type == "cpu":
        return dict(zip(unit_names, all_reduce_sum(counts).tolist()))
    counts = all_reduce_sum(counts.pin_memory().to(device, non_blocking=True))
    return dict(zip(unit_names, counts.unbind()))


def add_metrics(sums: dict, out: dict[str, torch.Tensor], units: dict[str, float], family) -> None:
    """Add a micro-batch's metrics (means over their units) to the step's sums, weighted by the local unit counts
    (host floats: no device read). A metric with no units here adds nothing (its mean is NaN); its key is still
    set, so that every process reduces the same keys."""
    for key, value in out.items():
        if key == "loss":
            continue
        count = units.get(family.metric_unit(key), 0.0)
        part = value.detach().double() * count if count else torch.zeros((), dtype=torch.float64,
                                                                          device=value.device)
        sums[key] = sums[key] + part if key in sums else part


def global_metrics(sums: dict, global_units: dict, family, device: torch.device) -> dict[str, float]:
    """The step's metrics over the global batch: the per-process sums summed over processes (one all-reduce, at
    logging steps only), each divided by its unit's global count. A metric without units in the whole batch is
    left out (no NaN in the logs)."""
    if not sums:
        return {}
    keys = sorted(sums)
    totals = all_reduce_sum(torch.stack([sums[k].to(device) for k in keys])).tolist()
    counts = [float(global_units[family.metric_unit(k)]) for k in keys]
    return {k: total / count for k, total, count in zip(keys, totals, counts) if count > 0}
