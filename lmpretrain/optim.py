"""AdamW with the BERT weight-decay exclusions and a linear warmup / linear decay schedule."""

from __future__ import annotations

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


def linear_schedule(optimizer: torch.optim.Optimizer, *, warmup_steps: int, train_steps: int):
    """Learning rate rises linearly over ``warmup_steps`` then falls linearly to zero at ``train_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (train_steps - step) / max(1, train_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
