"""The run state: everything an exact resume needs, in one object (model, optimizer, scheduler, loss scaler, step
counters and data position, RNG). :mod:`lmpretrain.checkpoint` saves it, chooses the checkpoint to resume from and
loads it back; the training loop only advances it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from .models.base import PretrainingModel


@dataclass
class TrainState:
    """The loop's counters: where the run is in its steps and in its stream of samples."""

    step: int = 0
    next_position: int = 0  # global sample position where the next step's batch starts
    skipped_steps: int = 0  # steps skipped by the fp16 loss scaler or for a non-finite loss
    nonfinite_streak: int = 0
    tokens_seen: int = 0
    last_loss: float | None = None  # the last step's global loss (the summary's final_loss, also after a resume)

    def advance(self, *, samples: int, tokens: int, stepped: bool, loss: float) -> None:
        """Count one optimizer step over ``samples`` global samples (``stepped``: False when the update was
        skipped)."""
        self.step += 1
        self.next_position += samples
        self.tokens_seen += tokens
        self.last_loss = loss
        if not stepped:
            self.skipped_steps += 1
        self.nonfinite_streak = 0 if math.isfinite(loss) else self.nonfinite_streak + 1


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class RunState:
    """One run's training state. ``state_dict()`` holds everything but the weights: those are saved as
    transformers model dirs (loadable as they are), so :mod:`lmpretrain.checkpoint` writes ``model`` beside it.

    ``model`` is the unwrapped model (no DDP, no torch.compile); ``scaler`` is the fp16 loss scaler or None. A
    :class:`~lmpretrain.models.base.PretrainingModel` adds what its ``resume_state()`` gives; another module
    (a test's) has no such state.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None
    train: TrainState = field(default_factory=TrainState)

    @property
    def step(self) -> int:
        return self.train.step

    def state_dict(self) -> dict:
        """The contents of a checkpoint's training state file (its keys are the on-disk format)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "train_state": asdict(self.train), "rng": rng_state(),
                "model_extra": self.model.resume_state() if self._pretraining else {}}

    def load_state_dict(self, saved: dict) -> None:
        """Restore what :meth:`state_dict` returned (the weights are loaded separately, from the model dirs)."""
        if saved["optimizer"] is not None:  # None: in a sharded checkpoint's shards, loaded with the weights
            self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.train = TrainState(**saved["train_state"])
        set_rng_state(saved["rng"])
        if saved.get("model_extra") and self._pretraining:
            self.model.load_resume_state(saved["model_extra"])

    @property
    def _pretraining(self) -> bool:
        return isinstance(self.model, PretrainingModel)
