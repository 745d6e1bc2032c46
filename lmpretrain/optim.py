"""AdamW with the BERT weight-decay exclusions, and the learning-rate schedule: linear warmup, then a linear or
cosine decay to ``min_lr_ratio`` x the learning rate at the run's last step."""

from __future__ import annotations

import math

import torch


def build_optimizer(model: torch.nn.Module, *, learning_rate: float, weight_decay: float, adam_epsilon: float,
                    adam_betas: tuple[float, float], device: torch.device) -> torch.optim.AdamW:
    """AdamW; no weight decay for biases and LayerNorm weights (as BERT), nor for a partly frozen weight (its
    ``frozen_rows``: decay would move the frozen rows); fused kernels on CUDA."""
    decay, no_decay, seen = [], [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:  # tied embeddings appear twice
            continue
        seen.add(id(param))
        lowered = name.lower()
        exempt = name.endswith("bias") or "layernorm" in lowered or "layer_norm" in lowered or \
            getattr(param, "frozen_rows", None) is not None
        (no_decay if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, eps=adam_epsilon, betas=adam_betas,
                             fused=device.type == "cuda")


def schedule_factor(step: int, *, warmup_steps: int, train_steps: int, schedule: str = "linear",
                    min_lr_ratio: float = 0.0) -> float:
    """The learning rate's share of the peak at ``step`` (0-based: the rate of update ``step + 1``).

    Warmup rises linearly to 1 at step ``warmup_steps - 1`` (the first update already has a non-zero rate). Then the
    decay over ``progress = (step - warmup_steps) / (train_steps - warmup_steps)``, clamped to [0, 1]: linear,
    ``1 - progress``, 0 past the end; cosine, ``0.5 * (1 + cos(pi * progress))`` (half a cycle, as transformers'
    ``get_cosine_schedule_with_warmup`` with num_cycles 0.5); both end at ``min_lr_ratio`` (``ratio + (1 - ratio) x
    decay``, as transformers' ``get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=...)``)."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    span = max(1, train_steps - warmup_steps)
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
    else:  # (train_steps - step) / span: the same floats as before cosine existed, bit for bit
        decay = max(0.0, (train_steps - step) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def lr_schedule(optimizer: torch.optim.Optimizer, *, warmup_steps: int, train_steps: int, schedule: str = "linear",
                min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's schedule (see :func:`schedule_factor`) as a LambdaLR: its state is the step alone, so a resume with
    other settings follows the new ones from the resume step on."""
    if schedule not in ("linear", "cosine"):
        raise ValueError(f"unknown lr schedule {schedule!r}")

    def factor(step: int) -> float:
        return schedule_factor(step, warmup_steps=warmup_steps, train_steps=train_steps, schedule=schedule,
                               min_lr_ratio=min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def linear_schedule(optimizer: torch.optim.Optimizer, *, warmup_steps: int, train_steps: int):
    """Learning rate rises linearly over ``warmup_steps`` then falls linearly to zero at ``train_steps``."""
    return lr_schedule(optimizer, warmup_steps=warmup_steps, train_steps=train_steps)


def apply_settings(optimizer: torch.optim.Optimizer, scheduler, *, learning_rate: float, weight_decay: float,
                   adam_epsilon: float, adam_betas: tuple[float, float]) -> None:
    """After a resume, put this run's settings in place of the saved ones (``load_state_dict`` restored the old
    learning rate, epsilon, betas and weight decay). The schedule is a function of the step and of the current
    ``learning-rate``, ``warmup-steps`` and train steps (the lambda closes over them): from the resume step on, the
    learning rate is what these settings give at that step, as if the run had had them from the start. Unchanged
    settings give the saved values bit for bit."""
    for index, group in enumerate(optimizer.param_groups):
        group["initial_lr"] = learning_rate
        group["eps"] = adam_epsilon
        group["betas"] = tuple(adam_betas)
        if index == 0:  # the decayed group (build_optimizer's order); the other never decays
            group["weight_decay"] = weight_decay
    scheduler.base_lrs = [learning_rate] * len(optimizer.param_groups)
    rates = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates
