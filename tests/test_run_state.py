"""The run state round-trips through state_dict / load_state_dict, and the precision step skips non-finite steps."""

import math

import torch

from lmpretrain.precision import make_precision
from lmpretrain.run_state import RunState, TrainState


def make_state(seed: int) -> RunState:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    return RunState(model, optimizer, scheduler)


def test_state_dict_round_trip_restores_optimizer_schedule_counters_and_rng():
    state = make_state(0)
    state.model(torch.ones(3, 4)).sum().backward()
    state.optimizer.step()
    state.scheduler.step()
    state.train.advance(samples=8, tokens=100, stepped=False, loss=float("nan"))
    saved = state.state_dict()
    expected_draw = torch.rand(3)

    other = make_state(1)
    other.load_state_dict(saved)
    assert math.isnan(other.train.last_loss)  # the summary's final_loss after a resume (written as null)
    other.train.last_loss = None
    assert other.train == TrainState(step=1, next_position=8, skipped_steps=1, nonfinite_streak=1, tokens_seen=100)
    assert other.scheduler.last_epoch == state.scheduler.last_epoch
    assert other.optimizer.state_dict()["state"][0]["step"] == 1
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG continues where the saved run was


def test_fp32_step_skips_a_non_finite_loss_or_gradient():
    precision = make_precision(0, False, torch.device("cpu"))
    state = make_state(0)
    before = state.model.weight.detach().clone()
    state.model(torch.ones(1, 4)).sum().backward()
    grad_norm, stepped = precision.step(state.optimizer, state.model.parameters(), 1.0, loss_finite=False)
    assert not stepped and grad_norm > 0 and torch.equal(state.model.weight, before)
    state.model.weight.grad.fill_(float("nan"))
    assert precision.step(state.optimizer, state.model.parameters(), 1.0)[1] is False
    state.optimizer.zero_grad()
    state.model(torch.ones(1, 4)).sum().backward()
    assert precision.step(state.optimizer, state.model.parameters(), 1.0)[1] is True
    assert not torch.equal(state.model.weight, before)
