"""The held-out evaluation: every loss term's mean over its own units on the eval split, perplexity from the main
term, and masked-token accuracy; the same for the training loop (each ``eval-steps``), ``evaluate_perplexity.py``
and the downstream tools, which need none of the loop's machinery."""

from __future__ import annotations

import math
import time

import torch

from .data.loader import count_units
from .distributed import Layout, all_reduce_sum
from .log import duration, get_logger, progress
from .precision import Precision

logger = get_logger(__name__)

EVAL_NOTICE_S = 10.0  # an evaluation expected to take longer says so, with its estimate


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, data, layout: Layout, precision: Precision, max_samples: int) -> dict[str, float]:
    """Mean loss over the eval split (this process's share; summed over processes), and perplexity. ``data``: the
    run's ``data_setup.RunData``, of which only the eval split and its collator are read (so this module needs
    nothing of how a run's data is built)."""
    if data.eval_dataset is None:
        return {}
    model.eval()
    total = min(len(data.eval_dataset), max_samples)
    terms = model.family.loss_terms
    sums = torch.zeros(2 * len(terms) + 2, dtype=torch.float64)
    batch_size = layout.per_device_batch_size
    mine = [p for p in range(total) if p % layout.world_size == layout.rank]
    starts, started = range(0, len(mine), batch_size), time.perf_counter()
    with progress(total=len(starts), desc="eval", unit="batch", leave=False) as bar:
        for start in starts:
            batch = data.eval_collator([data.eval_dataset[p] for p in mine[start:start + batch_size]])
            units = count_units(batch)
            with precision.autocast():
                out = model(to_device(batch, layout.device))
            for i, term in enumerate(terms):
                if units[term.unit] and term.name in out:
                    sums[2 * i] += float(out[term.name]) * units[term.unit]
                    sums[2 * i + 1] += units[term.unit]
            if "mlm_accuracy" in out and units.get("masked"):
                sums[-2] += float(out["mlm_accuracy"]) * units["masked"]
                sums[-1] += units["masked"]
            bar.update(1)
            if start == 0:
                _announce_eval(total, len(starts), time.perf_counter() - started)
    all_reduce_sum(sums)
    model.train()
    result = {}
    for i, term in enumerate(terms):
        if sums[2 * i + 1] > 0:
            result[f"eval/{term.name}"] = float(sums[2 * i] / sums[2 * i + 1])
    main_term = f"eval/{terms[0].name}"
    if main_term in result:
        result["eval/perplexity"] = math.exp(min(result[main_term], 50.0))
    if sums[-1] > 0:
        result["eval/mlm_accuracy"] = float(sums[-2] / sums[-1])
    return result


def _announce_eval(instances: int, batches: int, first_batch_s: float) -> None:
    """After an evaluation's first batch: one line with its estimate when the rest looks long (a bar alone is
    hidden by LMP_NO_PROGRESS, and the step-0 evaluation on a loaded machine can take minutes)."""
    estimate = first_batch_s * batches
    if estimate >= EVAL_NOTICE_S:
        logger.info("evaluating %d eval instances in %d batches of this process: about %s (the first batch took "
                    "%.1f s; --max_eval_samples sets the instances)", instances, batches, duration(estimate),
                    first_batch_s)
